/**
 * The Kubernetes NATS users (deploy/k8s/base/nats-auth.conf), rendered from
 * the same per-service permissions `infermesh up` gives its own nats-server
 * (services/cli/nats-auth.ts), so the two cannot drift: kustomize.test.ts
 * compares the file with this rendering. After a change of permissions:
 *
 *     npx vite-node test/deploy/print-nats-auth-conf.ts > deploy/k8s/base/nats-auth.conf
 *
 * Differences from `up`: all inference replicas share the user `inference`
 * (pods of one Deployment; their replica ids are pod names, so their
 * heartbeat keys cannot be listed ahead), which may therefore write any key
 * of the replicas bucket and publish lifecycle events as any replica
 * (`infermesh.events.model.*.*`: still never the registry's subject, so never
 * a registry kind such as promoted), and share one inbox prefix. Passwords are never in
 * the file: nats-server reads `$NATS_PASSWORD_<USER>` from its environment,
 * which the StatefulSet fills from the Secret `infermesh-nats`.
 */
import { BUCKET_REPLICAS, subjects } from '../../libs/bus/index.js';
import { NATS_ADMIN_USER, natsInboxPrefix, natsPermissions, type NatsPermissions } from '../../services/cli/nats-auth.js';

/** The Secret with one password per NATS user (key = user name). */
export const NATS_SECRET = 'infermesh-nats';
/** The NATS users of the Kubernetes deployment: operators' admin, then one per service. */
export const K8S_NATS_USERS = [NATS_ADMIN_USER, 'registry', 'monitor', 'router', 'inference'] as const;

/** The environment variable of the nats pods that holds `user`'s password. */
export function passwordVariable(user: string): string {
  return `NATS_PASSWORD_${user.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

/** `user`'s permissions on Kubernetes: up's, with the replicas' shared user (see the module comment). */
export function k8sPermissions(user: string): NatsPermissions {
  if (user !== 'inference') return natsPermissions(user);
  const sample = 'inference-1';
  const p = natsPermissions(sample);
  const swap = (s: string) =>
    s === `$KV.${BUCKET_REPLICAS}.${sample}`
      ? `$KV.${BUCKET_REPLICAS}.*`
      : s === subjects.replicaEvents('*', sample)
        ? subjects.replicaEvents('*', '*')
        : s === `${natsInboxPrefix(sample)}.>`
          ? `${natsInboxPrefix(user)}.>`
          : s;
  return { publish: p.publish.map(swap), subscribe: p.subscribe.map(swap) };
}

/** The text of deploy/k8s/base/nats-auth.conf. */
export function natsAuthConf(): string {
  const q = (s: string) => JSON.stringify(s);
  const list = (xs: string[]) => ['[', ...xs.map((x) => `          ${q(x)}`), '        ]'].join('\n');
  const users = K8S_NATS_USERS.map((user) => {
    const p = k8sPermissions(user);
    return [
      '    {',
      `      user: ${q(user)}`,
      `      password: $${passwordVariable(user)}`,
      '      permissions: {',
      `        publish: { allow: ${list(p.publish)} }`,
      `        subscribe: { allow: ${list(p.subscribe)} }`,
      '      }',
      '    }',
    ].join('\n');
  });
  return [
    '# NATS users, one per service, each allowed only what that service does.',
    '# Generated from services/cli/nats-auth.ts (the permissions `infermesh up` uses):',
    '#   npx vite-node test/deploy/print-nats-auth-conf.ts > deploy/k8s/base/nats-auth.conf',
    `# Passwords come from the environment (Secret ${NATS_SECRET}, one key per user).`,
    'authorization {',
    '  users = [',
    users.join('\n'),
    '  ]',
    '}',
    '',
  ].join('\n');
}
