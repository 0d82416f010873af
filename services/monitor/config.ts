/** The monitor's configuration: its ports plus the fields every service shares. */
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
};

export type MonitorConfig = ConfigOf<typeof monitorSpec>;
