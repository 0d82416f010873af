/** Prints deploy/k8s/base/nats-auth.conf (see nats-auth-conf.ts): npx vite-node test/deploy/print-nats-auth-conf.ts > deploy/k8s/base/nats-auth.conf */
import { natsAuthConf } from './nats-auth-conf.js';

process.stdout.write(natsAuthConf());
