/**
 * Offline validation of Kubernetes objects with the kubernetes-models package:
 * its JSON-schema validators (types, required fields, formats) and, since
 * those let unknown fields through, its TypeScript interfaces compiled with
 * TypeScript's excess-property check (which catches a misspelt field such
 * as `readOnlyRootFileSystem` anywhere in an object).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import ts from 'typescript';
import { ROOT } from './code-facts.js';

const require = createRequire(import.meta.url);

export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
} & Record<string, unknown>;

/** The schema errors of `obj` (empty when valid, or a line saying no schema is known for its kind). */
export function schemaErrors(obj: K8sObject): string[] {
  let Model: new (data: unknown) => { validate(): void };
  try {
    Model = require(`kubernetes-models/${obj.apiVersion}/${obj.kind}`)[obj.kind];
  } catch {
    return [`no schema for ${obj.apiVersion} ${obj.kind}`];
  }
  try {
    new Model(obj).validate();
    return [];
  } catch (err) {
    return [err instanceof Error ? err.message : String(err)];
  }
}

/**
 * Type-checks every object against kubernetes-models' interface for its
 * kind, in one in-memory TypeScript program; returns the diagnostics per
 * object (index in `objs`), only for objects that have any.
 */
export function fieldErrors(objs: readonly K8sObject[]): Map<number, string[]> {
  const file = path.join(ROOT, 'test', 'deploy', '__k8s_objects__.ts');
  // One object per line, so a diagnostic's line is the object's index.
  const text = objs
    .map((o, i) => `export const o${i}: import('kubernetes-models/${o.apiVersion}/${o.kind}').I${o.kind} = ${JSON.stringify(o)};`)
    .join('\n');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ['lib.es2022.d.ts'],
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, lang, ...rest) => (name === file ? ts.createSourceFile(name, text, lang) : getSourceFile.call(host, name, lang, ...rest));
  host.fileExists = (name) => name === file || fileExists.call(host, name);
  host.readFile = (name) => (name === file ? text : readFile.call(host, name));
  const program = ts.createProgram([file], options, host);
  const source = program.getSourceFile(file)!;
  const out = new Map<number, string[]>();
  for (const d of [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)]) {
    const line = d.start === undefined ? 0 : source.getLineAndCharacterOfPosition(d.start).line;
    const msg = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    out.set(line, [...(out.get(line) ?? []), msg]);
  }
  return out;
}
