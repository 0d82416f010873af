/**
 * infermesh-monitor: wires config, telemetry, NATS and the Monitor, then
 * waits for SIGINT/SIGTERM. The logic lives in monitor.ts and its modules.
 */
import { loadServiceConfig, serviceStarted, startupFailed } from '../../libs/config/index.js';
import { createLogger } from '../../libs/log/index.js';
import { startTelemetry } from '../../libs/telemetry/index.js';
import { connectNats, natsSecurityOf } from '../../libs/bus/index.js';
import { AccessPolicy } from '../../libs/grpc/index.js';
import { monitorSpec } from './config.js';
import { Monitor } from './monitor.js';

async function main(): Promise<void> {
  const config = loadServiceConfig('monitor', monitorSpec, process.argv.slice(2), process.env);
  const log = createLogger('monitor', config.logLevel);
  // Before NATS: an open management plane off loopback stops start-up at once.
  const access = AccessPolicy.forListener({ tokensFile: config.tokensFile, host: config.host, insecure: config.insecureManagement, warn: (m) => log.warn(m) });
  const telemetry = await startTelemetry('infermesh-monitor', process.env);
  const nc = await connectNats(config.natsUrl, 'infermesh-monitor', log, natsSecurityOf(config));
  const monitor = await Monitor.create(config, { nc, log, access });
  log.info({ grpcPort: monitor.grpcPort, metricsPort: monitor.metricsPort }, 'listening');
  serviceStarted();

  let closing: Promise<void> | null = null;
  const shutdown = (signal: NodeJS.Signals): void => {
    closing ??= (async () => {
      log.info({ signal }, 'shutting down');
      await monitor.close();
      await nc.drain().catch((err: unknown) => log.warn({ err: String(err) }, 'nats drain failed'));
      await telemetry.shutdown();
      process.exit(0);
    })();
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

main().catch((err: unknown) => startupFailed('monitor', err));
