/** The monitor's configuration: its ports, the slow-request retention, and the fields every service shares. */
import { commonSpec, int, type ConfigOf } from '../../libs/config/index.js';

export const monitorSpec = {
  ...commonSpec,
  port: int({ env: 'INFERMESH_MONITOR_PORT', flag: 'port', default: 8700, min: 0, max: 65535, help: 'gRPC port (0 = any free port)' }),
  metricsPort: int({
    env: 'INFERMESH_METRICS_PORT',
    flag: 'metrics-port',
    default: 9464,
    min: 0,
    max: 65535,
    help: 'Prometheus /metrics HTTP port (0 = any free port)',
  }),
  slowRetentionMs: int({
    env: 'INFERMESH_SLOW_RETENTION_MS',
    flag: 'slow-retention-ms',
    default: 15 * 60_000,
    min: 1000,
    max: 24 * 3_600_000,
    help: 'how long GetSlowRequests keeps listing a slow request after it happened',
  }),
};

export type MonitorConfig = ConfigOf<typeof monitorSpec>;
