/**
 * NATS least privilege for the nats-server that `infermesh up` starts: one
 * NATS user per service (registry, monitor, router, each inference replica)
 * allowed to publish and subscribe only where that service must, plus an
 * `admin` user for operators that no service gets. Passwords are generated
 * into `<dir>/nats-auth/` (0700; files 0600) on the first `up` and reused by
 * later runs with the same dir; the server's config is written there too.
 *
 * JetStream is reached through subjects, so its permissions are subject
 * permissions: a KV put is a publish to `$KV.<bucket>.<key>`, an Object Store
 * write a publish to `$O.<bucket>.>`, reading a stream or bucket needs
 * `$JS.API.STREAM.INFO.<stream>` and `$JS.API.CONSUMER.*.<stream>…` (KV gets:
 * `$JS.API.DIRECT.GET.<stream>`), and JetStream's replies come to the
 * client's inbox. Each user gets an inbox of its own (`_INBOX.<user>.>`,
 * handed to the service as INFERMESH_NATS_INBOX_PREFIX), so no service can
 * read the replies and deliveries meant for another.
 *
 * Creating streams: every service opens the buckets and streams it uses with
 * create-if-missing, and `up` starts them at the same time, so each may
 * create (`$JS.API.STREAM.CREATE.<stream>`) exactly the streams it opens.
 * Creating never changes a stream that exists (the server refuses a
 * different config under an existing name). Updating, deleting and purging
 * streams, deleting single messages and every other JetStream API call are
 * denied, except the registry's purge of the artifacts store (nats.js purges
 * an object's old chunks when it is replaced).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { BUCKET_ARTIFACTS, BUCKET_MODELS, BUCKET_REPLICAS, EVENTS_STREAM, SAMPLES_STREAM, OUTCOMES_STREAM, ALERTS_STREAM, RETRAIN_STREAM, subjects } from '../../libs/bus/index.js';
import { CliError } from './output.js';

/** The user with every permission, for operators (e.g. the `nats` CLI); given to no service. */
export const NATS_ADMIN_USER = 'admin';
/** The services' NATS users, by role; inference replicas are `inference-<i>`. */
export type NatsRole = 'registry' | 'monitor' | 'router' | 'inference';

export interface NatsPermissions {
  /** Subjects this user may publish to (everything else is denied). */
  publish: string[];
  /** Subjects this user may subscribe to (everything else is denied). */
  subscribe: string[];
}

/** Credentials and server config of one state directory. */
export interface NatsAuth {
  /** `<dir>/nats-auth`. */
  dir: string;
  /** The nats-server config file (0600), for `nats-server -c`. */
  configFile: string;
  /** The credentials file (0600): `{"users": {"<user>": "<password>"}}`. */
  credentialsFile: string;
  /** Password by user. */
  users: Readonly<Record<string, string>>;
}

const KV_MODELS = `KV_${BUCKET_MODELS}`;
const KV_REPLICAS = `KV_${BUCKET_REPLICAS}`;
const OBJ_ARTIFACTS = `OBJ_${BUCKET_ARTIFACTS}`;

/** The inbox prefix of `user`: JetStream replies and deliveries come to `<prefix>.>`. */
export function natsInboxPrefix(user: string): string {
  return `_INBOX.${user}`;
}

/** The role of a service child of `up` (`inference-2` → inference), or null. */
export function natsRoleOf(user: string): NatsRole | null {
  if (user === 'registry' || user === 'monitor' || user === 'router') return user;
  return /^inference-\d+$/.test(user) ? 'inference' : null;
}

/** The streams `openBuckets` (libs/bus) opens, creating them when missing. */
const OPENED_BY_EVERY_SERVICE = [KV_MODELS, KV_REPLICAS, OBJ_ARTIFACTS, EVENTS_STREAM];

/** Looking up (and creating when missing) a stream, without reading its messages. */
function open(stream: string): string[] {
  return [`$JS.API.STREAM.INFO.${stream}`, `$JS.API.STREAM.CREATE.${stream}`];
}

/**
 * Reading a stream's messages: ephemeral and ordered consumers (nats.js
 * creates, polls and deletes them; `CONSUMER.CREATE.<stream>.<name>.<filter>`
 * on servers ≥ 2.9), flow-control replies and acks, and direct/last-message
 * gets (KV get, Object Store info).
 */
function read(stream: string): string[] {
  return [
    `$JS.API.CONSUMER.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.CONSUMER.INFO.${stream}.*`,
    `$JS.API.CONSUMER.DELETE.${stream}.*`,
    `$JS.API.CONSUMER.MSG.NEXT.${stream}.*`,
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.FC.${stream}.>`,
    `$JS.ACK.${stream}.>`,
  ];
}

/**
 * What each service may publish and subscribe to (see the module comment).
 * `user` is the NATS user: its inbox and, for a replica, its own key in the
 * replicas bucket (the replica id is the user name).
 */
export function natsPermissions(user: string): NatsPermissions {
  if (user === NATS_ADMIN_USER) return { publish: ['>'], subscribe: ['>'] };
  const role = natsRoleOf(user);
  if (!role) throw new Error(`no NATS permissions for ${user}`);
  const inbox = `${natsInboxPrefix(user)}.>`;
  // JetStream's account check (jetstreamManager), finding a stream by subject (nats.js does for
  // Object Store reads; names only) and opening the shared buckets.
  const base = ['$JS.API.INFO', '$JS.API.STREAM.NAMES', ...OPENED_BY_EVERY_SERVICE.flatMap(open)];
  switch (role) {
    case 'registry':
      return {
        publish: [
          ...base,
          ...[KV_MODELS, KV_REPLICAS, OBJ_ARTIFACTS, EVENTS_STREAM].flatMap(read),
          `$JS.API.STREAM.PURGE.${OBJ_ARTIFACTS}`,
          // Versions, aliases and traffic, reference profiles and probes; model bytes; its lifecycle events
          // (registered, promoted, …: infermesh.events.model.<name>, a subject no replica may publish).
          `$KV.${BUCKET_MODELS}.>`,
          `$O.${BUCKET_ARTIFACTS}.>`,
          subjects.events('*'),
        ],
        subscribe: [inbox],
      };
    case 'monitor':
      return {
        publish: [
          ...base,
          ...[SAMPLES_STREAM, OUTCOMES_STREAM, ALERTS_STREAM, RETRAIN_STREAM].flatMap(open),
          ...[KV_MODELS, KV_REPLICAS, EVENTS_STREAM, SAMPLES_STREAM, OUTCOMES_STREAM, ALERTS_STREAM].flatMap(read),
          'infermesh.outcomes.*',
          'infermesh.alerts.*',
          // Retraining requests when a drift or evaluation alert fires (stream INFERMESH_RETRAIN, which it creates).
          'infermesh.retrain.*',
        ],
        subscribe: [inbox, 'infermesh.samples.*'],
      };
    case 'router':
      return {
        publish: [...base, ...[KV_MODELS, KV_REPLICAS].flatMap(read), 'infermesh.samples.*'],
        subscribe: [inbox],
      };
    case 'inference':
      return {
        publish: [
          ...base,
          ...[KV_MODELS, KV_REPLICAS, OBJ_ARTIFACTS].flatMap(read),
          // Its own heartbeat record only (the key is its replica id).
          `$KV.${BUCKET_REPLICAS}.${user}`,
          // Its loading/warmed/ready/failed/draining/unloaded events, on subjects that end with its replica id
          // (infermesh.events.model.<name>.<id>): never the registry's, never another replica's. Readers
          // keep replica kinds only from such a subject and registry kinds only from the registry's.
          subjects.replicaEvents('*', user),
        ],
        subscribe: [inbox],
      };
  }
}

/** The users `up` needs for `replicas` inference replicas, admin first. */
export function natsUsers(replicas: number): string[] {
  return [NATS_ADMIN_USER, 'registry', 'monitor', 'router', ...Array.from({ length: replicas }, (_, i) => `inference-${i + 1}`)];
}

/**
 * Loads `<stateDir>/nats-auth` (creating it 0700), generates a password for
 * each user of {@link natsUsers} that has none yet (existing ones are kept),
 * and (re)writes the credentials and the nats-server config, both 0600.
 * Throws FAILED_PRECONDITION when the credentials file exists but is unreadable or malformed.
 */
export async function prepareNatsAuth(stateDir: string, replicas: number): Promise<NatsAuth> {
  const dir = path.join(stateDir, 'nats-auth');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const credentialsFile = path.join(dir, 'credentials.json');
  const configFile = path.join(dir, 'nats-server.conf');
  const users: Record<string, string> = await readCredentials(credentialsFile);
  for (const u of natsUsers(replicas)) users[u] ??= randomBytes(24).toString('base64url');
  await writePrivate(credentialsFile, `${JSON.stringify({ users }, null, 2)}\n`);
  await writePrivate(configFile, serverConfig(users));
  return { dir, configFile, credentialsFile, users };
}

async function readCredentials(file: string): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new CliError('FAILED_PRECONDITION', `${file}: cannot read the NATS credentials (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  try {
    const parsed = JSON.parse(text) as { users?: unknown };
    const users = parsed.users;
    if (typeof users !== 'object' || users === null) throw new Error('no users');
    const out: Record<string, string> = {};
    for (const [u, p] of Object.entries(users)) {
      if (typeof p !== 'string' || !/^[A-Za-z0-9_-]{16,}$/.test(p) || !/^[a-z0-9-]{1,64}$/.test(u)) throw new Error('bad entry');
      out[u] = p;
    }
    return out;
  } catch {
    throw new CliError('FAILED_PRECONDITION', `${file}: not a credentials file written by infermesh up; remove it to generate new NATS passwords`);
  }
}

/** Writes `text` to `file` with mode 0600 (through a temporary file, so a reader never sees half of it). */
async function writePrivate(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, file);
}

/** The nats-server config: authorization with one user per entry of `users`; no user means no connection. */
export function serverConfig(users: Readonly<Record<string, string>>): string {
  const q = (s: string) => JSON.stringify(s);
  const list = (xs: string[]) => `[${xs.map(q).join(', ')}]`;
  const entries = Object.entries(users).map(([user, password]) => {
    const p = natsPermissions(user);
    return [
      '    {',
      `      user: ${q(user)}, password: ${q(password)}`,
      '      permissions: {',
      `        publish: { allow: ${list(p.publish)} }`,
      `        subscribe: { allow: ${list(p.subscribe)} }`,
      '      }',
      '    }',
    ].join('\n');
  });
  return [
    '# Written by `infermesh up` on every start (users and passwords from credentials.json). Keep it private.',
    'authorization {',
    '  users = [',
    entries.join(',\n'),
    '  ]',
    '}',
    '',
  ].join('\n');
}

/**
 * The environment that hands a child its NATS user (never its command line,
 * which `ps` shows). Clears other NATS credential variables inherited from
 * the caller, which would conflict. A replica's id is its user name, the one
 * key of the replicas bucket it may write.
 */
export function natsChildEnv(auth: NatsAuth, user: string): Record<string, string> {
  const password = auth.users[user];
  if (password === undefined) throw new Error(`no NATS user ${user}`);
  return {
    INFERMESH_NATS_USER: user,
    INFERMESH_NATS_PASSWORD: password,
    INFERMESH_NATS_INBOX_PREFIX: natsInboxPrefix(user),
    INFERMESH_NATS_CREDS: '',
    INFERMESH_NATS_TOKEN: '',
    ...(natsRoleOf(user) === 'inference' ? { INFERMESH_REPLICA_ID: user } : {}),
  };
}
