/** The monitor's configuration: its ports, the slow-request retention, and the fields every service shares. */
import { bool, commonSpec, int, num, str, type ConfigOf } from '../../libs/config/index.js';
import { CANARY_METRICS } from './canary.js';
import { DEFAULT_OUTCOME_RETENTION_MS, DEFAULT_OUTCOME_SAMPLES_PER_MODEL, DEFAULT_SAMPLES_STREAM_MAX_BYTES } from './outcomes.js';

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
  // Input and output drift (drift.ts).
  driftWindow: int({ env: 'INFERMESH_DRIFT_WINDOW', flag: 'drift-window', default: 1000, min: 10, max: 100_000, help: 'samples per model version in the sliding drift window' }),
  driftMinSamples: int({ env: 'INFERMESH_DRIFT_MIN_SAMPLES', flag: 'drift-min-samples', default: 100, min: 1, max: 100_000, help: 'samples in the window before a feature can be reported drifting (at most --drift-window)' }),
  driftPsiThreshold: num({ env: 'INFERMESH_DRIFT_PSI_THRESHOLD', flag: 'drift-psi-threshold', default: 0.2, min: 0, help: 'PSI above this is drift' }),
  driftKsThreshold: num({ env: 'INFERMESH_DRIFT_KS_THRESHOLD', flag: 'drift-ks-threshold', default: 0.2, min: 0, max: 1, help: 'Kolmogorov-Smirnov distance above this is drift' }),
  // Ground truth and online evaluation (outcomes.ts).
  outcomeRetentionMs: int({
    env: 'INFERMESH_OUTCOME_RETENTION_MS',
    flag: 'outcome-retention-ms',
    default: DEFAULT_OUTCOME_RETENTION_MS,
    min: 60_000,
    max: 90 * 24 * 3_600_000,
    help: 'how long prediction samples and outcomes are kept for joining (the samples and outcomes streams\' max_age, and in memory)',
  }),
  samplesStreamMaxBytes: int({
    env: 'INFERMESH_SAMPLES_STREAM_MAX_BYTES',
    flag: 'samples-stream-max-bytes',
    default: DEFAULT_SAMPLES_STREAM_MAX_BYTES,
    min: 1024 * 1024,
    help: 'size cap of the JetStream samples stream (and of the outcomes stream), oldest dropped first',
  }),
  outcomeSamplesPerModel: int({
    env: 'INFERMESH_OUTCOME_SAMPLES_PER_MODEL',
    flag: 'outcome-samples-per-model',
    default: DEFAULT_OUTCOME_SAMPLES_PER_MODEL,
    min: 100,
    max: 10_000_000,
    help: 'samples with a request id kept per model for joining outcomes (and outcomes waiting for their sample), oldest evicted first',
  }),
  // Alerts, probes and canary analysis.
  routerAddress: str({ env: 'INFERMESH_ROUTER_ADDR', flag: 'router-address', default: '127.0.0.1:8500', help: 'router the golden probes go through' }),
  registryAddress: str({ env: 'INFERMESH_REGISTRY_ADDR', flag: 'registry-address', default: '127.0.0.1:8600', help: 'registry the canary analysis rolls back through' }),
  alertIntervalMs: int({ env: 'INFERMESH_ALERT_INTERVAL_MS', flag: 'alert-interval-ms', default: 5000, min: 100, max: 3_600_000, help: 'how often alert rules and canaries are evaluated' }),
  alertWindowMs: int({ env: 'INFERMESH_ALERT_WINDOW_MS', flag: 'alert-window-ms', default: 60_000, min: 1000, max: 3_600_000, help: 'window of the p99 / error-rate rules and the canary comparison' }),
  alertP99Ms: num({ env: 'INFERMESH_ALERT_P99_MS', flag: 'alert-p99-ms', default: 0, min: 0, help: 'default rule: p99 above this many ms (0 = no default p99 rule)' }),
  alertErrorRate: num({ env: 'INFERMESH_ALERT_ERROR_RATE', flag: 'alert-error-rate', default: 0.05, min: 0, max: 1, help: 'default rule: error rate above this (0 = none)' }),
  alertMinRequests: int({ env: 'INFERMESH_ALERT_MIN_REQUESTS', flag: 'alert-min-requests', default: 20, min: 1, help: 'requests in the window before the default rules judge' }),
  alertFor: int({ env: 'INFERMESH_ALERT_FOR', flag: 'alert-for', default: 2, min: 1, max: 100, help: 'bad evaluations in a row before an alert fires' }),
  alertResolveAfter: int({ env: 'INFERMESH_ALERT_RESOLVE_AFTER', flag: 'alert-resolve-after', default: 3, min: 1, max: 100, help: 'good evaluations in a row before a firing alert resolves' }),
  alertRetentionMs: int({ env: 'INFERMESH_ALERT_RETENTION_MS', flag: 'alert-retention-ms', default: 3_600_000, min: 1000, help: 'how long ListAlerts shows a resolved alert' }),
  alertRules: str({ env: 'INFERMESH_ALERT_RULES', flag: 'alert-rules', default: '', help: 'JSON rules file: {"rules":[{"model":"fraud","rule":"p99_ms","above":20}]}' }),
  canaryMinRequests: int({ env: 'INFERMESH_CANARY_MIN_REQUESTS', flag: 'canary-min-requests', default: 50, min: 1, help: 'requests each side (canary, production) needs in the window before the canary is judged' }),
  canaryAlpha: num({ env: 'INFERMESH_CANARY_ALPHA', flag: 'canary-alpha', default: 0.05, min: 1e-9, max: 0.5, help: 'accepted rate of false rollbacks over a canary\'s life (Bonferroni over the tests, alpha spending 6/(π²k²) over the looks)' }),
  canaryLookMs: int({ env: 'INFERMESH_CANARY_LOOK_MS', flag: 'canary-look-ms', default: 0, min: 0, help: 'least time between two looks of a canary test, each spending part of --canary-alpha (0 = a quarter of --alert-window-ms)' }),
  canaryLatencyMargin: num({ env: 'INFERMESH_CANARY_LATENCY_MARGIN', flag: 'canary-latency-margin', default: 0.2, min: 0, help: 'roll back on latency only when the canary median exceeds production\'s by more than this share (and the test is significant)' }),
  canaryMaxErrorRateIncrease: num({ env: 'INFERMESH_CANARY_MAX_ERROR_RATE_INCREASE', flag: 'canary-max-error-rate-increase', default: 0.01, min: 0, max: 1, help: 'roll back when the canary error rate exceeds production by more' }),
  canaryMaxP99Ratio: num({ env: 'INFERMESH_CANARY_MAX_P99_RATIO', flag: 'canary-max-p99-ratio', default: 1.5, min: 1, help: 'roll back when the canary p99 exceeds production’s times this…' }),
  canaryMinP99DeltaMs: num({ env: 'INFERMESH_CANARY_MIN_P99_DELTA_MS', flag: 'canary-min-p99-delta-ms', default: 2, min: 0, help: '…and by more than this many ms' }),
  canaryMetric: str({ env: 'INFERMESH_CANARY_METRIC', flag: 'canary-metric', default: 'f1', choices: ['', ...CANARY_METRICS], help: 'evaluation metric compared once outcomes exist (cost = cost per 1,000 decisions under the model\'s cost model; empty = none)' }),
  canaryMetricMargin: num({ env: 'INFERMESH_CANARY_METRIC_MARGIN', flag: 'canary-metric-margin', default: 0.05, min: 0, help: 'roll back when the metric is worse than production by more' }),
  canaryMinLabelled: int({ env: 'INFERMESH_CANARY_MIN_LABELLED', flag: 'canary-min-labelled', default: 50, min: 1, help: 'labelled samples per version before the metric is compared' }),
  canaryPromoteAfterMs: int({ env: 'INFERMESH_CANARY_PROMOTE_AFTER_MS', flag: 'canary-promote-after-ms', default: 0, min: 0, help: 'promote a canary that held this long (0 = never)' }),
  // Security (README "Security"): who may record outcomes, and the token the canary analysis rolls back with.
  tokensFile: str({ env: 'INFERMESH_TOKENS_FILE', flag: 'tokens-file', default: '', help: 'hashed bearer tokens with roles; RecordOutcomes needs the outcomes role (empty = open)' }),
  insecureManagement: bool({ env: 'INFERMESH_INSECURE_MANAGEMENT', flag: 'insecure-management', default: false, help: 'serve a non-loopback --host without --tokens-file (anyone who reaches it may record outcomes)' }),
  registryToken: str({ env: 'INFERMESH_REGISTRY_TOKEN', flag: 'registry-token', default: '', help: 'bearer token (promote role) sent to the registry' }),
};

export type MonitorConfig = ConfigOf<typeof monitorSpec>;
