/**
 * Typed, validated, frozen configuration: defaults, then environment
 * variables, then command-line flags (`--name value` or `--name=value`).
 * A bad value stops start-up with the variable's or flag's name in the
 * message. Nothing else in the code base reads process.env.
 */

export class ConfigError extends Error {
  override name = 'ConfigError';
}

interface FieldBase<T> {
  /** Environment variable, e.g. INFERMESH_ROUTER_PORT. */
  env?: string;
  /** Flag without dashes, e.g. "port". */
  flag?: string;
  default: T;
  help?: string;
}

export interface Field<T> extends FieldBase<T> {
  parse(raw: string, source: string): T;
}

function fail(source: string, raw: string, want: string): never {
  throw new ConfigError(`${source}=${JSON.stringify(raw)}: expected ${want}`);
}

/** An integer in [min, max]. */
export function int(o: FieldBase<number> & { min?: number; max?: number }): Field<number> {
  const min = o.min ?? Number.MIN_SAFE_INTEGER;
  const max = o.max ?? Number.MAX_SAFE_INTEGER;
  return {
    ...o,
    parse(raw, source) {
      if (!/^-?\d+$/.test(raw.trim())) fail(source, raw, `an integer in [${min}, ${max}]`);
      const n = Number(raw);
      if (n < min || n > max) fail(source, raw, `an integer in [${min}, ${max}]`);
      return n;
    },
  };
}

/** A finite number in [min, max]. */
export function num(o: FieldBase<number> & { min?: number; max?: number }): Field<number> {
  const min = o.min ?? -Infinity;
  const max = o.max ?? Infinity;
  return {
    ...o,
    parse(raw, source) {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n) || n < min || n > max) fail(source, raw, `a number in [${min}, ${max}]`);
      return n;
    },
  };
}

/** A string, optionally matching `pattern` or one of `choices`. */
export function str<T extends string = string>(
  o: FieldBase<NoInfer<T>> & { pattern?: RegExp; choices?: readonly T[] },
): Field<T> {
  return {
    ...o,
    parse(raw, source) {
      if (o.choices && !o.choices.includes(raw as T)) fail(source, raw, `one of ${o.choices.join(', ')}`);
      if (o.pattern && !o.pattern.test(raw)) fail(source, raw, `a value matching ${o.pattern}`);
      return raw as T;
    },
  };
}

/** true/false, 1/0, yes/no. A bare flag means true. */
export function bool(o: FieldBase<boolean>): Field<boolean> {
  return {
    ...o,
    parse(raw, source) {
      const v = raw.trim().toLowerCase();
      if (['1', 'true', 'yes', 'on', ''].includes(v)) return true;
      if (['0', 'false', 'no', 'off'].includes(v)) return false;
      return fail(source, raw, 'true or false');
    },
  };
}

export type Spec = Record<string, Field<unknown>>;
export type ConfigOf<S extends Spec> = { readonly [K in keyof S]: S[K] extends Field<infer T> ? T : never };

/**
 * Builds the frozen config for `spec` from `argv` (flags) and `env`.
 * Throws ConfigError naming the variable or flag on a bad or unknown value.
 */
export function loadConfig<S extends Spec>(spec: S, argv: readonly string[], env: NodeJS.ProcessEnv): ConfigOf<S> {
  const out: Record<string, unknown> = {};
  const byFlag = new Map<string, string>();
  for (const [key, field] of Object.entries(spec)) {
    out[key] = field.default;
    if (field.flag) byFlag.set(field.flag, key);
    const raw = field.env ? env[field.env] : undefined;
    if (raw !== undefined && raw !== '') out[key] = field.parse(raw, field.env!);
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new ConfigError(`unexpected argument ${JSON.stringify(arg)}`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq > 0 ? eq : undefined);
    const key = byFlag.get(name);
    if (!key) throw new ConfigError(`unknown flag --${name}`);
    const field = spec[key]!;
    let raw: string;
    if (eq > 0) raw = arg.slice(eq + 1);
    else if (typeof field.default === 'boolean' && (argv[i + 1] === undefined || argv[i + 1]!.startsWith('--'))) raw = 'true';
    else if (argv[i + 1] === undefined) throw new ConfigError(`--${name}: missing value`);
    else raw = argv[++i]!;
    out[key] = field.parse(raw, `--${name}`);
  }
  return Object.freeze(out) as ConfigOf<S>;
}

/** The usage text of a service: each flag with its variable, default and help. */
export function usage(service: string, spec: Spec): string {
  const rows: [string, string][] = [];
  for (const field of Object.values(spec)) {
    if (!field.flag) continue;
    const f = field as Field<unknown> & { choices?: readonly string[] };
    const value = typeof f.default === 'boolean' ? '[true|false]' : f.choices ? f.choices.join('|') : typeof f.default === 'number' ? 'N' : 'VALUE';
    const def = f.default === '' ? '' : ` (default ${String(f.default)})`;
    rows.push([`--${f.flag} ${value}`, `${f.env ?? ''}${def}${f.help ? `: ${f.help}` : ''}`]);
  }
  const width = Math.min(40, Math.max(...rows.map(([a]) => a.length)));
  return [
    `usage: node dist/services/${service}/main.js [--flag value | --flag=value] ...`,
    '',
    'Every flag can also be set by the environment variable after it; flags win.',
    '',
    ...rows.map(([a, b]) => `  ${a.padEnd(width)}  ${b}`),
    '',
  ].join('\n');
}

let startingService: string | null = null;

/** One line for a start-up failure: the message's first line, without OpenSSL's source locations. */
function startupLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  const line = msg.split('\n').find((l) => l.trim() !== '') ?? 'failed';
  return line.replace(/^[0-9A-F]{8,}:error:[0-9A-F]+:[^:]*:[^:]*:/, '').replace(/:\.\.\/deps\/openssl\/[^ ]*$/, '');
}

/**
 * Ends a service that failed to start: one line, `infermesh-<service>:
 * <message>`, on stderr; exit status 2 for a configuration error, else 1.
 */
export function startupFailed(service: string, err: unknown): never {
  process.stderr.write(`infermesh-${service}: ${startupLine(err)}\n`);
  process.exit(err instanceof ConfigError ? 2 : 1);
}

function onStartupError(err: unknown): void {
  startupFailed(startingService ?? 'service', err);
}

/**
 * A service's configuration, as {@link loadConfig}, for its `main.ts`:
 * `--help` (or `-h`) prints the usage and exits 0. From here until
 * {@link serviceStarted}, any error that would escape start-up (a bad flag or
 * variable, an unreadable or expired certificate, a port in use) prints one
 * line, `infermesh-<service>: <message>`, on stderr and exits 2 for a
 * configuration error, else 1: never a stack trace.
 */
export function loadServiceConfig<S extends Spec>(service: string, spec: S, argv: readonly string[], env: NodeJS.ProcessEnv): ConfigOf<S> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(usage(service, spec));
    process.exit(0);
  }
  if (startingService === null) process.on('uncaughtException', onStartupError);
  startingService = service;
  return loadConfig(spec, argv, env);
}

/** Start-up is over (the service listens): errors from here on are Node's to report, with their stack. */
export function serviceStarted(): void {
  process.off('uncaughtException', onStartupError);
}

/** Fields every service shares: NATS, logging, message limits. */
export const commonSpec = {
  natsUrl: str({ env: 'INFERMESH_NATS_URL', flag: 'nats', default: 'nats://127.0.0.1:4222' }),
  /** JetStream replication of the buckets and event stream this service creates (3 on a 3-node cluster). */
  natsReplicas: int({ env: 'INFERMESH_NATS_REPLICAS', flag: 'nats-replicas', default: 1, min: 1, max: 5 }),
  logLevel: str({
    env: 'INFERMESH_LOG_LEVEL',
    flag: 'log-level',
    default: 'info',
    choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const,
  }),
  host: str({ env: 'INFERMESH_HOST', flag: 'host', default: '127.0.0.1' }),
  maxMessageBytes: int({ env: 'INFERMESH_MAX_MESSAGE_BYTES', flag: 'max-message-bytes', default: 4 * 1024 * 1024, min: 1024, max: 512 * 1024 * 1024 }),
  shutdownGraceMs: int({ env: 'INFERMESH_SHUTDOWN_GRACE_MS', flag: 'shutdown-grace-ms', default: 5000, min: 0, max: 600_000 }),
  /** PEM certificate and key of this service's gRPC listeners (TLS); '' = plaintext. */
  tlsCert: str({ env: 'INFERMESH_TLS_CERT', flag: 'tls-cert', default: '' }),
  tlsKey: str({ env: 'INFERMESH_TLS_KEY', flag: 'tls-key', default: '' }),
  /** PEM CA: clients must present a certificate it signed (mutual TLS), and peers are verified against it. */
  tlsCa: str({ env: 'INFERMESH_TLS_CA', flag: 'tls-ca', default: '' }),
  /**
   * Name to expect in the certificates of the services this one calls (router → replicas,
   * monitor → router and registry) instead of the address's host: replicas announce pod IPs.
   */
  tlsServerName: str({ env: 'INFERMESH_TLS_SERVER_NAME', flag: 'tls-server-name', default: '' }),
  /**
   * Under mutual TLS, a certificate whose URI SAN starts with this prefix (then the service's name)
   * is a service of the mesh; other certificates are clients. Replicas' Runtime API accepts only services.
   */
  tlsServiceUri: str({ env: 'INFERMESH_TLS_SERVICE_URI', flag: 'tls-service-uri', default: 'spiffe://infermesh/service/', pattern: /^[a-z][a-z0-9+.-]*:\/\/\S+$/ }),
  /** NATS over TLS: the CA that signed the server's certificate, and a client certificate when the server verifies clients. */
  natsTlsCa: str({ env: 'INFERMESH_NATS_TLS_CA', flag: 'nats-tls-ca', default: '' }),
  natsTlsCert: str({ env: 'INFERMESH_NATS_TLS_CERT', flag: 'nats-tls-cert', default: '' }),
  natsTlsKey: str({ env: 'INFERMESH_NATS_TLS_KEY', flag: 'nats-tls-key', default: '' }),
  /** NATS credentials: a .creds file (JWT + NKey), a user and password, or a token (one of them). */
  natsCreds: str({ env: 'INFERMESH_NATS_CREDS', flag: 'nats-creds', default: '' }),
  natsUser: str({ env: 'INFERMESH_NATS_USER', flag: 'nats-user', default: '' }),
  natsPassword: str({ env: 'INFERMESH_NATS_PASSWORD', flag: 'nats-password', default: '' }),
  natsToken: str({ env: 'INFERMESH_NATS_TOKEN', flag: 'nats-token', default: '' }),
  /** Subject prefix of this service's NATS inboxes (JetStream replies); '' = `_INBOX`. A user whose permissions allow only `<prefix>.>` needs it. */
  natsInboxPrefix: str({ env: 'INFERMESH_NATS_INBOX_PREFIX', flag: 'nats-inbox-prefix', default: '', pattern: /^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)?$/ }),
};

/**
 * Node flags every service process is started with (by `infermesh up`, the
 * benchmark, the test harness and the container image). V8 reads them only
 * at start-up.
 * - A smaller young generation (8 MB semi-spaces instead of 16).
 * - Old space grown by 2× its live size between full collections
 *   (`--heap-growing-percent=100`) instead of V8's up-to-4× when it sees
 *   high throughput: under load a router's heap otherwise swells to 4× its
 *   ~18 MB live set before it is marked. Measured: router peak RSS 174 →
 *   121 MB at no visible throughput cost (BENCHMARKS.md).
 * Together they keep peak RSS under load within the budgets (router < 150 MB,
 * replica < 200 MB).
 */
export const SERVICE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8', '--heap-growing-percent=100'];
