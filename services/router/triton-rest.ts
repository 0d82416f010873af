/**
 * Triton's extensions on the REST gateway (Triton's HTTP API):
 *
 *   GET  /v2/models/<m>[/versions/<v>]/config     ModelConfig as JSON
 *   GET  /v2/models[/<m>[/versions/<v>]]/stats    ModelStatistics (all models without <m>)
 *   POST /v2/repository/index                     body optional: {"ready": true}
 *   POST /v2/repository/models/<m>/load           body optional: {"parameters": {"version": 3}}
 *   POST /v2/repository/models/<m>/unload         refused (400, see triton-repository.ts)
 *
 * `/v2/models/stats` is the statistics of every model (as Triton routes it),
 * not the metadata of a model named `stats`. Index and unload change nothing
 * and take a POST of any content type (tritonclient sends none); load changes
 * serving and needs `Content-Type: application/json` like every other POST,
 * so that a web page cannot make a browser call it (tritonclient: pass
 * `headers={"Content-Type": "application/json"}`). Load forwards the
 * caller's `Authorization` header to the registry.
 */
import type http from 'node:http';
import { InvalidArgumentError } from '../../libs/errors/index.js';
import type { oip } from '../../libs/proto/index.js';
import { isObject, kindOf, parseJsonObject, readBody, type JsonObject, type Out } from './rest-json.js';
import type { RoutingTable } from './routing-table.js';
import { repositoryIndex, repositoryLoad, repositoryUnload } from './triton-repository.js';
import { authorizationOf, configJson, configOf, indexJson, statisticsJson, type TritonDeps } from './triton-service.js';
import { modelStatistics } from './triton-stats.js';

/** An endpoint of the gateway's route table (as rest-server.ts's). */
export interface TritonEndpoint {
  method: 'GET' | 'POST';
  /** A POST that changes nothing: any Content-Type is taken (tritonclient sends none). */
  anyContentType?: boolean;
  run: () => Promise<[number, Out]>;
}

/** A JSON object body, or `{}` when the body is empty. */
async function optionalBody(req: http.IncomingMessage, maxBytes: number): Promise<JsonObject> {
  const buf = await readBody(req, maxBytes);
  return buf.length === 0 ? {} : parseJsonObject(buf);
}

function repositoryParameters(body: JsonObject): { [key: string]: oip.ModelRepositoryParameter } {
  const p = body.parameters;
  if (p === undefined) return {};
  if (!isObject(p)) throw new InvalidArgumentError('parameters', `must be an object, got ${kindOf(p)}`);
  const out: { [key: string]: oip.ModelRepositoryParameter } = {};
  for (const [k, v] of Object.entries(p)) {
    if (typeof v === 'boolean') out[k] = { parameterChoice: { $case: 'boolParam', value: v } };
    else if (typeof v === 'number' && Number.isSafeInteger(v)) out[k] = { parameterChoice: { $case: 'int64Param', value: v } };
    else if (typeof v === 'string') out[k] = { parameterChoice: { $case: 'stringParam', value: v } };
    else throw new InvalidArgumentError(`parameters.${k.slice(0, 64)}`, `must be a boolean, an integer or a string, got ${kindOf(v)}`);
  }
  return out;
}

/**
 * The Triton endpoint for path segments `s` (`['', 'v2', …]`), or null when
 * the path is not one of them. `deadlineMs`: the request's deadline (epoch ms).
 */
export function tritonEndpoint(d: TritonDeps, req: http.IncomingMessage, s: readonly string[], maxBodyBytes: number, deadlineMs: () => number): TritonEndpoint | null {
  const table: RoutingTable = d.table;
  if (s[2] === 'repository') {
    if (s.length === 4 && s[3] === 'index') {
      return {
        method: 'POST',
        anyContentType: true,
        run: async () => {
          const body = await optionalBody(req, maxBodyBytes);
          if (body.ready !== undefined && typeof body.ready !== 'boolean') throw new InvalidArgumentError('ready', `must be a boolean, got ${kindOf(body.ready)}`);
          return [200, indexJson(repositoryIndex(table, { repositoryName: '', ready: body.ready === true }))];
        },
      };
    }
    if (s.length === 6 && s[3] === 'models' && (s[5] === 'load' || s[5] === 'unload')) {
      const modelName = s[4]!;
      // Both change serving state: Content-Type application/json as every state-changing POST.
      return {
        method: 'POST',
        run: async () => {
          const body = await optionalBody(req, maxBodyBytes);
          const auth = req.headers.authorization;
          const r = { repositoryName: '', modelName, parameters: repositoryParameters(body) };
          if (s[5] === 'unload') await repositoryUnload(table, d.registry, r, authorizationOf(auth), deadlineMs());
          else await repositoryLoad(table, d.registry, r, authorizationOf(auth), deadlineMs());
          return [200, {}];
        },
      };
    }
    return null;
  }
  if (s[2] !== 'models') return null;
  if (s.length === 4 && s[3] === 'stats') return { method: 'GET', run: async () => [200, statisticsJson(await modelStatistics(table, '', '', deadlineMs()))] };
  if (s.length < 5) return null;
  const name = s[3]!;
  let rest = s.slice(4);
  let version = '';
  if (rest[0] === 'versions' && rest.length >= 2) {
    version = rest[1]!;
    rest = rest.slice(2);
  }
  if (rest.length !== 1) return null;
  if (rest[0] === 'config') return { method: 'GET', run: async () => [200, configJson(await configOf(table, name, version, deadlineMs()))] };
  if (rest[0] === 'stats') return { method: 'GET', run: async () => [200, statisticsJson(await modelStatistics(table, name, version, deadlineMs()))] };
  return null;
}
