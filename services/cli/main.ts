#!/usr/bin/env node
/**
 * infermesh: the command-line tool for people (tables) and scripts (--json).
 * This file only wires commander to the command modules beside it; each
 * command's module is loaded when that command runs, so start-up stays quick.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { defaultAddresses, defaultStateDir, resolveAddresses, type GlobalOptions } from './addresses.js';
import { describeError } from './output.js';
import { parseScenarios } from './bench/scenarios.js';

const program = new Command('infermesh')
  .description('Deploy and operate ONNX models on the infermesh gRPC mesh')
  .version('0.1.0')
  // Program options only before the command, so `infer --version 2` means the model version.
  .enablePositionalOptions()
  .exitOverride()
  // Commander's own error lines are replaced by ours (see the catch below).
  .configureOutput({ outputError: () => undefined })
  // TLS and the bearer token (global flags, else INFERMESH_TLS_* / INFERMESH_TOKEN) for every client the command builds.
  .hook('preAction', async (_program, command) => {
    // Addresses no flag or INFERMESH_*_ADDR gives come from a running `infermesh up`'s <dir>/addresses.json.
    resolveAddresses(command.opts(), (key) => command.getOptionValueSource(key));
    (await import('./security.js')).applyClientSecurity(command.opts());
  });

/** Adds the options every command takes: service addresses and --json. */
/** Commander reducer for a repeatable option. */
function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function withGlobals(cmd: Command): Command {
  return cmd
    .addOption(new Option('--registry <addr>', 'registry gRPC address (env INFERMESH_REGISTRY_ADDR, else what a running `up` wrote to <dir>/addresses.json)').default(defaultAddresses.registry))
    .addOption(new Option('--router <addr>', 'router gRPC address (env INFERMESH_ROUTER_ADDR, else <dir>/addresses.json)').default(defaultAddresses.router))
    .addOption(new Option('--monitor <addr>', 'monitor gRPC address (env INFERMESH_MONITOR_ADDR, else <dir>/addresses.json)').default(defaultAddresses.monitor))
    .option('--dir <dir>', 'state directory of the `infermesh up` whose addresses to use (env INFERMESH_DIR, default .infermesh)')
    .option('--json', 'print exactly one JSON object on stdout')
    .option('--token <token>', 'bearer token sent on every call (env INFERMESH_TOKEN, which keeps it out of ps)')
    .option('--tls-ca <file>', 'PEM CA that signed the services\' certificates: speak TLS (env INFERMESH_TLS_CA)')
    .option('--tls-cert <file>', 'PEM client certificate for mutual TLS (env INFERMESH_TLS_CERT)')
    .option('--tls-key <file>', 'PEM key of --tls-cert (env INFERMESH_TLS_KEY)');
}

function int(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (raw: string): number => {
    const n = Number(raw);
    if (!/^-?\d+$/.test(raw.trim()) || n < min || n > max) throw new InvalidArgumentError(`expected an integer in [${min}, ${max}]`);
    return n;
  };
}
const port = int(0, 65535);

/** A share in [0, 1]. */
function unitShare(raw: string): number {
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError('expected a number in [0, 1]');
  return n;
}

/** A finite number ≥ 0 (costs). */
function nonNegative(raw: string): number {
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number ≥ 0');
  return n;
}

program
  .command('up')
  .description('start a local mesh: nats-server (JetStream), registry, monitor, inference replicas, router(s); restarts what exits; Ctrl-C stops it')
  .option('--dir <dir>', 'state directory (NATS store, logs, traces, addresses.json; env INFERMESH_DIR)', defaultStateDir)
  .option('--replicas <n>', 'inference replicas', int(1, 64), 2)
  .option('--routers <n>', 'routers on this host; the n-th (from 0) gets router-port+2n and rest-port+2n (8500/8501, 8502/8503, …); clients given all their addresses fail over between them', int(1, 16), 1)
  .option('--nats <url>', 'use this NATS server (JetStream enabled) instead of starting one')
  .option('--nats-port <port>', 'port of the started nats-server (default 4222, or a free one when taken)', port)
  .option('--router-port <port>', 'router gRPC port (0 = any free)', port, 8500)
  .option('--rest-port <port>', 'router REST port (0 = any free)', port, 8501)
  .option('--registry-port <port>', 'registry gRPC port', port, 8600)
  .option('--monitor-port <port>', 'monitor gRPC port', port, 8700)
  .option('--metrics-port <port>', 'monitor Prometheus port', port, 9464)
  .option('--inference-port <port>', 'first inference replica port (replica i gets port+i; 0 = any free)', port, 8800)
  .option('--demo', 'train and push the fraud demo model, send demo traffic, print its stats')
  .option('--demo-requests <n>', 'demo scoring requests', int(1, 10_000_000), 2000)
  .option('--sample-rate <share>', "share of requests each router keeps as samples: all drift, evaluation (outcomes) and slow-request data come from them (routers' own default: 0.01)", unitShare, 1)
  .option('--workers <n>', 'worker threads per inference replica (passed to each replica as --workers)', int(1, 256))
  .option('--no-traces', 'do not keep sampled spans in <dir>/traces (read by infermesh traces show)')
  .option('--json', 'print one JSON object (addresses, demo stats) on stdout once ready')
  .option('--join <urls>', "join a running mesh through its NATS (every server of a cluster, comma-separated): start no nats-server, only --only's roles (default: inference)")
  .option('--only <roles>', 'start only these roles, comma-separated: registry, monitor, inference, router (default: all; inference with --join)')
  .option('--host <addr>', 'address the services bind (default 127.0.0.1; 0.0.0.0 needs --advertise)')
  .option('--advertise <addr>', 'address replicas announce to routers on other hosts (default --host)')
  .option('--router-address <list>', 'with --join --only monitor: the mesh\'s routers (golden probes)')
  .option('--registry-address <addr>', 'with --join --only monitor: the mesh\'s registry (canary rollbacks)')
  .action(async (o) => {
    const { upCommand } = await import('./up.js');
    process.exitCode = await upCommand(o);
  });

program
  .command('status')
  .description('the processes of the mesh `infermesh up` runs: pid, state, uptime, restarts, last exit')
  .option('--dir <dir>', 'state directory given to up (env INFERMESH_DIR)', defaultStateDir)
  .option('--json', 'print one JSON object')
  .action(async (o) => {
    const { statusCommand } = await import('./status.js');
    process.exitCode = await statusCommand(o);
  });

const models = program.command('models').description('push, list, show, promote and roll back model versions; canary and shadow traffic; lifecycle history');

withGlobals(models.command('push').argument('<file>', 'ONNX model file'))
  .description('upload an ONNX model as the next version of a model')
  .requiredOption('--name <name>', 'model name')
  .option('--alias <alias>', 'point this alias (e.g. production) at the new version')
  .option('--description <text>', 'free text kept with the version')
  .option('--max-batch <n>', 'dynamic batching: largest batch (1 = off)', int(1, 65536))
  .option('--max-queue-delay-us <n>', 'dynamic batching: longest wait for a batch to fill, in µs', int(0, 10_000_000))
  .option('--replicas <k>', 'inference replicas that hold the model (rendezvous placement; default: all)', int(1, 1000))
  .option('--cache <entries>', 'response cache entries per replica for identical inputs (default: off)', int(1, 10_000_000))
  .option('--reference <file>', 'reference rows of inputs (CSV with a header, or JSON lines) profiled for drift monitoring')
  .addOption(new Option('--wait [seconds]', 'return once the router serves the new version (loaded and warmed on a replica), waiting at most this long').argParser(int(1, 3600)).preset('60'))
  .addOption(new Option('--reference-format <format>', 'format of --reference (default: from its extension)').choices(['csv', 'jsonl']))
  .option('--segment-by <param>', 'request parameter whose value segments evaluation and drift (e.g. channel)')
  .option('--cost-fp <cost>', 'cost model: cost of a false positive (eval, canary, metrics)', nonNegative)
  .option('--cost-fn <cost>', 'cost model: cost of a false negative', nonNegative)
  .option('--value-tp <value>', 'cost model: value of a true positive (a negative cost)', nonNegative)
  .option('--tag <key=value>', 'a tag of the new version (repeatable)', collect, [])
  .action(async (file: string, o) => (await import('./models.js')).pushCommand(file, o));

models
  .command('example')
  .description('write a sample ONNX model to push (the demo\'s card-fraud scorer, trained here), and optionally reference rows for drift')
  .requiredOption('--out <file>', 'where to write the .onnx file')
  .option('--seed <n>', 'training data seed (7: the demo\'s model; another seed: another version of it)', int(0, 2 ** 31 - 1), 7)
  .option('--reference <file>', 'also write rows like the training data (CSV with a header) for models push --reference')
  .option('--reference-rows <n>', 'rows in --reference', int(1, 1_000_000), 2000)
  .option('--json', 'print one JSON object')
  .action(async (o) => (await import('./example.js')).exampleCommand(o));

withGlobals(models.command('list'))
  .description('all models with their versions and aliases')
  .option('--tag <key=value>', 'only versions carrying this tag (repeatable: all of them)', collect, [])
  .action(async (o) => (await import('./models.js')).listCommand(o));

withGlobals(models.command('show').argument('<name>', 'model name'))
  .description("a model's versions (sha256, created, inputs/outputs, tags, lineage), aliases, canary and shadow")
  .option('--tag <key=value>', 'only versions carrying this tag (repeatable: all of them)', collect, [])
  .action(async (name: string, o) => (await import('./models.js')).showCommand(name, o));

withGlobals(models.command('compose').argument('<name>', 'model name the composition is stored under').argument('[parts...]', 'NAME or NAME@VERSION (default: its production alias, else newest)'))
  .description('one ONNX graph from registered versions, stored as the next version of NAME with lineage: --pipeline (outputs feed the next inputs) or --ensemble COMBINE (same inputs, outputs combined)')
  .option('--pipeline', 'each part reads the previous part\'s outputs (by name, the only one, or --map)')
  .option('--ensemble <combine>', 'mean, max, vote or weighted=W1,W2,… (one weight per part, normalized)')
  .option('--map <step:input=output>', 'pipeline: feed INPUT of part STEP (from 2) from OUTPUT of the part before (repeatable)', collect, [])
  .option('--threshold <t>', 'vote on one score per row: the decision threshold (default 0.5)')
  .option('--tag <key=value>', 'a tag of the new version (repeatable)', collect, [])
  .option('--description <text>', 'free text kept with the version')
  .action(async (name: string, parts: string[], o) => (await import('./compose.js')).composeCommand(name, parts, o));

withGlobals(models.command('tag').argument('<name>', 'model name').argument('<version>', 'version number', int(1)).argument('[pairs...]', 'KEY=VALUE tags to set'))
  .description('set or remove tags of a version')
  .option('--remove <key>', 'remove this tag (repeatable)', collect, [])
  .option('--reason <text>', 'why, kept in the lifecycle history (models history)')
  .action(async (name: string, version: number, pairs: string[], o) => (await import('./curation.js')).tagCommand(name, version, pairs, o));

withGlobals(models.command('archive').argument('<name>', 'model name').argument('<version>', 'version number', int(1)))
  .description('archive a version (kept, never loaded or routable; refused while an alias, canary or shadow points at it), or --restore it')
  .option('--restore', 'bring an archived version back')
  .option('--reason <text>', 'why, kept in the lifecycle history (models history)')
  .action(async (name: string, version: number, o) => (await import('./curation.js')).archiveCommand(name, version, o));

withGlobals(models.command('delete').argument('<name>', 'model name').argument('<version>', 'version number', int(1)))
  .description('delete a version (refused while an alias, its rollback history, the canary, the shadow or a derived version depends on it); `models gc` frees its file')
  .option('--reason <text>', 'why, kept in the lifecycle history (models history)')
  .action(async (name: string, version: number, o) => (await import('./curation.js')).deleteCommand(name, version, o));

withGlobals(models.command('retain').argument('<name>', 'model name'))
  .description('archive (or --delete) the unaliased versions beyond the newest N; versions something depends on stay')
  .requiredOption('--keep-last <n>', 'unaliased versions to keep', int(1, 1_000_000))
  .option('--delete', 'delete instead of archive (admin)')
  .option('--dry-run', 'say what would go, change nothing')
  .option('--reason <text>', 'why, kept in the lifecycle history (models history)')
  .action(async (name: string, o) => (await import('./curation.js')).retainCommand(name, o));

withGlobals(models.command('gc'))
  .description('remove model files no version refers to from the object store (admin); prints the bytes freed')
  .option('--min-age <seconds>', 'only files stored at least this long ago (default 3600: a push in flight keeps its file)', int(0, 100_000_000))
  .option('--dry-run', 'say what would go, change nothing')
  .action(async (o) => (await import('./curation.js')).gcCommand(o));

withGlobals(models.command('promote').argument('<name>', 'model name').argument('<version>', 'version number', int(1)))
  .description('point an alias (default production) at a version')
  .option('--alias <alias>', 'alias to move', 'production')
  .option('--reason <text>', 'why, kept in the lifecycle history (models history)')
  .action(async (name: string, version: number, o) => (await import('./models.js')).promoteCommand(name, version, o));

withGlobals(models.command('rollback').argument('<name>', 'model name'))
  .description('point an alias (default production) back at its previous version')
  .option('--alias <alias>', 'alias to roll back', 'production')
  .option('--reason <text>', 'why, kept in the lifecycle history (models history)')
  .action(async (name: string, o) => (await import('./lifecycle.js')).rollbackCommand(name, o));

withGlobals(models.command('unload').argument('<name>', 'model name'))
  .description("stop the model serving: every router answers its requests UNAVAILABLE until `models load` (Triton's RepositoryModelUnload); replicas keep it warm")
  .option('--reason <text>', 'why, kept in the lifecycle history (models history)')
  .action(async (name: string, o) => (await import('./lifecycle.js')).servingCommand(name, false, o));

withGlobals(models.command('load').argument('<name>', 'model name'))
  .description("let an unloaded model serve again (Triton's RepositoryModelLoad; a promote does too)")
  .option('--reason <text>', 'why, kept in the lifecycle history (models history)')
  .action(async (name: string, o) => (await import('./lifecycle.js')).servingCommand(name, true, o));

withGlobals(models.command('canary').argument('<name>', 'model name').argument('[version]', 'version that gets the share', int(1)))
  .description('send a share of production traffic to a version (NAME VERSION --weight P), or remove the canary (NAME --clear)')
  .option('--weight <percent>', 'share of production traffic, 0 < P <= 100')
  .option('--key-header <key>', 'request metadata key whose value keeps a caller on one version (default: random per request)')
  .option('--clear', 'remove the canary')
  .option('--reason <text>', 'why, kept in the lifecycle history (models history)')
  .action(async (name: string, version: number | undefined, o) => (await import('./lifecycle.js')).canaryCommand(name, version, o));

withGlobals(models.command('shadow').argument('<name>', 'model name').argument('[version]', 'version that gets mirrored requests', int(1)))
  .description("mirror live requests to a version and compare its answers with production's (NAME VERSION), or stop (NAME --clear)")
  .option('--percent <percent>', 'share of requests mirrored, 0 < P <= 100 (default 100)')
  .option('--clear', 'remove the shadow')
  .option('--reason <text>', 'why, kept in the lifecycle history (models history)')
  .action(async (name: string, version: number | undefined, o) => (await import('./lifecycle.js')).shadowCommand(name, version, o));

withGlobals(models.command('history').argument('<name>', 'model name'))
  .description("a model's lifecycle events, oldest first: registered, loading, ready, promoted, rolled back, canaried, shadowed, failed …")
  .action(async (name: string, o: GlobalOptions) => (await import('./lifecycle.js')).historyCommand(name, o));

withGlobals(models.command('probe').argument('<name>', 'model name'))
  .description('store a golden probe the monitor sends through the router every interval (a wrong or slow answer raises an alert), or remove it (--clear)')
  .option('--input <json>', 'the probe request, as for infer: {"<input>": nestedArray} or tensors, or @file')
  .option('--expect <json>', "the first output's expected values (JSON array, or @file); default: today's answer")
  .option('--tolerance <t>', 'largest accepted difference per value', parseFloat, 1e-4)
  .option('--every <seconds>', 'probe interval in seconds (≥ 1)', parseFloat, 30)
  .option('--max-latency-ms <ms>', 'slower than this is a failure too (0 = no check)', int(0, 600_000), 0)
  .option('--clear', 'remove the probe')
  .action(async (name: string, o) => (await import('./probe.js')).probeCommand(name, { ...o, everyS: o.every }));

withGlobals(program.command('optimize').argument('<name>', 'model name').argument('<version>', 'version to optimize', int(1)))
  .description('make a cheaper version (graph, fp16, int8, prune) held to an accuracy gate on the reference rows (or --data); stored as the next version with lineage, ready for models canary')
  .requiredOption('--method <method>', 'graph, fp16, int8 or prune[=SPARSITY] (default sparsity 0.5)')
  .option('--level <level>', 'graph: basic (portable, default) or extended (com.microsoft fused operators, CPU)')
  .option('--data <file>', 'rows to gate on instead of the reference sample (CSV or JSON lines; a label column adds accuracy)')
  .addOption(new Option('--data-format <format>', 'format of --data (default: from its extension)').choices(['csv', 'jsonl']))
  .option('--max-abs-diff <x>', 'refuse when an output differs by more (default: no limit)')
  .option('--min-agreement <p>', 'refuse when fewer decisions agree (default 0.99)')
  .option('--threshold <t>', 'decision threshold for one score per row (default 0.5); wider outputs use argmax')
  .option('--force', 'store even beyond the limits (needs the promote role)')
  .option('--dry-run', 'measure only, store nothing')
  .option('--no-bench', 'skip the latency measurement')
  .option('--tag <key=value>', 'a tag of the new version (repeatable)', collect, [])
  .option('--description <text>', 'free text kept with the version')
  .action(async (name: string, version: number, o) => (await import('./optimize.js')).optimizeCommand(name, version, o));

withGlobals(program.command('alerts').argument('[name]', 'model name (default: all models)'))
  .description('alerts firing now and recently resolved (latency, errors, drift, evaluation, probes, canary analysis); --watch follows changes')
  .option('--watch', 'stream alert changes until Ctrl-C')
  .action(async (name: string | undefined, o) => (await import('./alerts.js')).alertsCommand(name, o));

withGlobals(program.command('infer').argument('<name>', 'model name'))
  .description('one inference through the router')
  .requiredOption('--input <json>', 'inputs: {"<input>": nestedArray, …} or [{"name","datatype","shape","data"}], or @file')
  .option('--version <v>', 'model version (default: the production alias)')
  .option('--output <names...>', 'outputs to return (default: all)')
  .option('--id <id>', 'request id, echoed in the response')
  .option('--timeout-ms <n>', 'deadline', int(1), 10_000)
  .option('--timing', "also print where the time went (the router's total, router, network, queue and compute ms) and the trace id")
  .action(async (name: string, o) => (await import('./infer.js')).inferCommand(name, o));

program
  .command('bench')
  .description(
    'measure in-process ONNX Runtime, a bare grpc-js echo, an inference replica and the mesh as `up` deploys it, under h2load: 128 in flight, concurrency 1, a few callers, an open loop at a fixed rate, with CPU per call; batching, event loop, memory',
  )
  .option('--requests <n>', 'calls per throughput run (per round)', int(100, 10_000_000), 20_000)
  .option('--connections <n>', 'HTTP/2 connections (throughput and open-loop runs)', int(1, 1000), 4)
  .option('--streams <n>', 'concurrent calls per connection (the open loop: at most)', int(1, 1000), 32)
  .option('--latency-requests <n>', 'calls per concurrency-1 run (per round)', int(100, 10_000_000), 2_000)
  .option('--few-requests <n>', 'calls per few-callers run (per round)', int(100, 10_000_000), 5_000)
  .option('--few-callers <n>', 'connections of the few-callers run, one call in flight each', int(1, 1000), 4)
  .option('--open-requests <n>', 'calls per open-loop run (per round)', int(100, 10_000_000), 10_000)
  .option('--rate <calls/s>', "open-loop rate (default: half the grpc-js echo's calls/s at connections×streams in flight, measured in the run)", int(1, 10_000_000))
  .option('--batch-requests <n>', 'calls per batching run (compute-bound model, per round)', int(100, 10_000_000), 3_000)
  .option('--warmup <n>', 'calls to each target before measuring', int(0, 10_000_000), 30_000)
  .option('--rounds <n>', 'measured rounds, target order rotated (and reversed every other round)', int(1, 100), 6)
  .option('--scenarios <list>', 'comma-separated, of load (128 in flight), c1, few, open, batching, eventloop (default: all)', (raw: string) => {
    try {
      return parseScenarios(raw);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  })
  .option('--json', 'print one JSON object')
  .action(async (o) => {
    const { benchCommand } = await import('./bench/bench.js');
    process.exitCode = await benchCommand(o);
  });

program
  .command('tune')
  .argument('<name>', 'model name the tried versions are pushed under')
  .description('find the batching policy and worker count with the most rows/s within a p99 target, on a local mesh of its own under h2load')
  .requiredOption('--model <file>', 'ONNX model file')
  .option('--input <json>', 'the request, as for infer ({"<input>": nestedArray, …}, [{"name","datatype","shape","data"}] or @file); default: one row of zeros')
  .option('--p99-target-ms <ms>', 'p99 latency target', '50')
  .option('--batch-sizes <list>', 'max batch sizes to try, comma-separated', '1,8,32,64')
  .option('--queue-delays-us <list>', 'max queue delays to try, in µs, comma-separated', '0,500,2000')
  .option('--workers <list>', 'worker threads per inference replica to try, comma-separated', '1,2')
  .option('--requests <n>', 'calls per configuration', int(100, 10_000_000), 2000)
  .option('--connections <n>', 'HTTP/2 connections', int(1, 1000), 2)
  .option('--streams <n>', 'concurrent calls per connection', int(1, 1000), 32)
  .option('--json', 'print one JSON object')
  .action(async (name: string, o) => {
    const { tuneCommand } = await import('./tune/tune.js');
    process.exitCode = await tuneCommand(name, o);
  });

withGlobals(program.command('drift').argument('<name>', 'model name'))
  .description("PSI and KS distance of each feature and output of a model's versions against the reference profile (or the previous version), drifting and worst first")
  .option('--version <n>', 'one version (default: every version with samples)', int(1))
  .option('--by-segment', "also each value of the model's segment parameter (models push --segment-by)")
  .action(async (name: string, o) => (await import('./drift.js')).driftCommand(name, o));

withGlobals(program.command('stats').argument('[name]', 'model name (default: all models)'))
  .description('requests, errors, latency percentiles and rate per model version, and shadow agreement, from the monitor')
  .option('--watch [seconds]', 'refresh every N seconds (default 2) until Ctrl-C')
  .action(async (name: string | undefined, o) => (await import('./stats.js')).statsCommand(name, o));

const traces = program.command('traces').description("find the traces of a model's slow requests and draw one");

withGlobals(traces.command('slow').argument('<name>', 'model name'))
  .description("the slowest requests of a model over the monitor's window (default 15 min), slowest first: trace id and where the time went")
  .option('--limit <n>', 'at most this many', int(1, 100), 20)
  .action(async (name: string, o) => (await import('./traces.js')).slowCommand(name, o));

withGlobals(traces.command('show').argument('[trace-id]', 'trace id, as traces slow and infer --timing print it'))
  .description("one trace's spans as a tree with a waterfall (router, forward, inference, queue, batch, onnx.run, encode), read from the span files infermesh up keeps in <dir>/traces")
  .option('--slowest <name>', 'the trace of the slowest recent request of this model (the first of traces slow NAME)')
  .option('--traces <folder>', "a folder of span files (the services' INFERMESH_TRACE_FILE) instead of <dir>/traces")
  .action(async (id: string | undefined, o) => (await import('./traces.js')).showCommand(id, o));

const outcomes = program.command('outcomes').description('ground truth: record labels (outcomes NAME FILE), export the joined rows (outcomes export NAME)');

withGlobals(outcomes.command('record', { isDefault: true }).argument('<name>', 'model name').argument('<file>', 'CSV with header request_id,label, or JSON lines {"request_id":…,"label":…}'))
  .description('record ground truth: (request id, label) pairs joined by the monitor to the predictions it kept (sent in batches of 1,000); `record` may be left out')
  .action(async (name: string, file: string, o: GlobalOptions) => (await import('./outcomes.js')).outcomesCommand(name, file, o));

withGlobals(outcomes.command('export').argument('<name>', 'model name'))
  .description('stream the joined rows (request id, time, version, segment, label, features, outputs) for retraining, in bounded memory (needs the outcomes role when tokens are configured)')
  .addOption(new Option('--format <format>', 'output format').choices(['csv', 'jsonl']).makeOptionMandatory())
  .option('--version <n>', 'one version (default: all)', int(1))
  .option('--since <time>', 'rows sampled since: ISO time, epoch ms, or a duration back from now (24h, 7d)')
  .option('--output <file>', 'write here instead of stdout')
  .action(async (name: string, o) => (await import('./outcomes-export.js')).exportCommand(name, o));

withGlobals(program.command('eval').argument('<name>', 'model name'))
  .description('online evaluation per version from recorded outcomes: accuracy, precision, recall, F1, ROC-AUC, log-loss (classifiers) or MSE, MAE, R2 (regressors); --compare A B with intervals and p-values')
  .option('--threshold <t>', 'binary decision threshold, 0 < t < 1 (default 0.5)')
  .option('--compare <versions...>', 'compare version A (baseline) with B: intervals, B − A with interval and p-value, samples needed')
  .option('--by-segment', "also evaluate each value of the model's segment parameter")
  .option('--segment <value>', 'with --compare: only requests of this segment value')
  .option('--optimize-threshold', 'the cost-minimising threshold per version (needs a cost model)')
  .option('--cost-fp <cost>', 'cost of a false positive (replaces the model’s cost model)', nonNegative)
  .option('--cost-fn <cost>', 'cost of a false negative', nonNegative)
  .option('--value-tp <value>', 'value of a true positive', nonNegative)
  .option('--confidence <c>', 'with --compare: interval coverage (default 0.95)')
  .option('--min-difference <d>', 'with --compare: difference to detect for SAMPLES NEEDED (default 0.05; relative for log-loss, MSE, MAE, cost)')
  .option('--power <p>', 'with --compare: power for SAMPLES NEEDED (default 0.8)')
  .option('--resamples <n>', 'with --compare: bootstrap resamples for F1 and R2 (default 1000)')
  .option('--seed <n>', 'with --compare: bootstrap seed (default 1)')
  .action(async (name: string, o) =>
    o.compare ? (await import('./eval-compare.js')).evalCompareCommand(name, o) : (await import('./outcomes.js')).evalCommand(name, o),
  );

const token = program.command('token').description('bearer tokens for the management plane (registry writes, alias moves, outcomes)');

token
  .command('hash')
  .description('print the tokens-file line (sha256 of the token, subject, roles) for a token read from stdin, or for a new random token')
  .option('--subject <name>', 'who the token stands for (recorded as the actor of its changes)')
  .option('--roles <list>', 'comma-separated: push, promote, outcomes, admin')
  .option('--json', 'print one JSON object')
  .action(async (o) => (await import('./token.js')).tokenHashCommand(o));

process.on('unhandledRejection', (err) => exitWith(err));

try {
  await program.parseAsync(process.argv);
  process.exit(process.exitCode ?? 0);
} catch (err) {
  exitWith(err);
}

function exitWith(err: unknown): never {
  if (err instanceof CommanderError) {
    // --help and --version end here too, with status 0.
    if (err.exitCode === 0) process.exit(0);
    // No command given: commander has printed the help on stderr.
    if (err.code === 'commander.help') process.exit(2);
    process.stderr.write(`error: INVALID_ARGUMENT: ${err.message.replace(/^error: /, '')}\n(run with --help for usage)\n`);
    process.exit(2);
  }
  const { line, exitCode } = describeError(err);
  process.stderr.write(`${line}\n`);
  process.exit(exitCode);
}
