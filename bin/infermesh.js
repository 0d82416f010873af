#!/usr/bin/env node
// `npx infermesh` in the repository runs the CLI that `npm run build` (or `npm run demo`,
// `npm test`) compiled to dist/. Nothing is built on install: npx links this package without
// running a build, so its first run is as quick as the others.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/services/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write(`error: FAILED_PRECONDITION: infermesh is not built yet: run \`npm run build\` in ${fileURLToPath(new URL('..', import.meta.url))}\n`);
  process.exit(1);
}
await import(main.href);
