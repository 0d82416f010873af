/** `infermesh models tag|archive|delete|gc|retain`: keeping a model's versions in order, through the registry. */
import { RegistryApi } from '../../libs/client/index.js';
import type { GlobalOptions } from './addresses.js';
import { UsageError, printJson, printText, remote } from './output.js';
import { parseTags } from './optimize.js';
import { formatBytes } from './table.js';

export async function tagCommand(name: string, version: number, pairs: string[], o: GlobalOptions & { remove?: string[]; reason?: string }): Promise<void> {
  const set = parseTags(pairs);
  if (Object.keys(set).length === 0 && !o.remove?.length) throw new UsageError('give KEY=VALUE pairs to set, or --remove KEY');
  const api = new RegistryApi(o.registry);
  try {
    const v = await remote('registry', o.registry, () => api.setTags(name, version, set, o.remove ?? [], o.reason ?? ''));
    if (o.json) printJson({ name, version, tags: v.tags });
    else printText(`${name}@${version} tags: ${Object.entries(v.tags).map(([k, x]) => `${k}=${x}`).join(' ') || '-'}`);
  } finally {
    api.close();
  }
}

export async function archiveCommand(name: string, version: number, o: GlobalOptions & { restore?: boolean; reason?: string }): Promise<void> {
  const api = new RegistryApi(o.registry);
  try {
    const v = await remote('registry', o.registry, () => api.archive(name, version, o.restore ?? false, o.reason ?? ''));
    if (o.json) printJson({ name, version, archived: v.archived });
    else printText(`${name}@${version} ${v.archived ? 'archived' : 'restored'}`);
  } finally {
    api.close();
  }
}

export async function deleteCommand(name: string, version: number, o: GlobalOptions & { reason?: string }): Promise<void> {
  const api = new RegistryApi(o.registry);
  try {
    const v = await remote('registry', o.registry, () => api.deleteVersion(name, version, o.reason ?? ''));
    if (o.json) printJson({ name, version, deleted: true, sha256: v.sha256 });
    else printText(`${name}@${version} deleted (its file ${v.sha256.slice(0, 12)} is freed by \`infermesh models gc\` once nothing else refers to it)`);
  } finally {
    api.close();
  }
}

export async function gcCommand(o: GlobalOptions & { minAge?: number; dryRun?: boolean }): Promise<void> {
  const api = new RegistryApi(o.registry);
  try {
    const r = await remote('registry', o.registry, () => api.collectGarbage({ ...(o.minAge !== undefined ? { minAgeS: o.minAge } : {}), dryRun: o.dryRun ?? false }));
    if (o.json) {
      printJson({ scanned: r.objectsScanned, removed: r.objectsRemoved, bytesFreed: r.bytesFreed, storeBytesBefore: r.storeBytesBefore, storeBytesAfter: r.storeBytesAfter, dryRun: o.dryRun ?? false, objects: r.removed });
      return;
    }
    printText(
      `${o.dryRun ? 'would remove' : 'removed'} ${r.objectsRemoved} of ${r.objectsScanned} artifacts, ${formatBytes(r.bytesFreed)}; object store ${formatBytes(r.storeBytesBefore)} → ${formatBytes(r.storeBytesAfter)}`,
    );
  } finally {
    api.close();
  }
}

export async function retainCommand(name: string, o: GlobalOptions & { keepLast: number; delete?: boolean; dryRun?: boolean; reason?: string }): Promise<void> {
  const api = new RegistryApi(o.registry);
  try {
    const r = await remote('registry', o.registry, () => api.retain({ name, keepLast: o.keepLast, delete: o.delete ?? false, dryRun: o.dryRun ?? false, reason: o.reason ?? '' }));
    if (o.json) {
      printJson({ name, keepLast: o.keepLast, dryRun: o.dryRun ?? false, archived: r.archived, deleted: r.deleted, kept: r.kept.map((k) => ({ version: k.version, why: k.why })) });
      return;
    }
    const verb = o.dryRun ? 'would ' : '';
    const acted = o.delete ? `${verb}delete: ${r.deleted.join(', ') || '-'}` : `${verb}archive: ${r.archived.join(', ') || '-'}`;
    printText([acted, ...r.kept.map((k) => `keep ${k.version}: ${k.why}`)].join('\n'));
  } finally {
    api.close();
  }
}
