/** The README's "A five-minute tour", as the readme-* tests read it: its fenced code blocks, in order. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface CodeBlock {
  lang: string;
  body: string;
}

/** The text of the README section whose heading is `heading`, up to the next `## ` heading. */
export function readmeSection(heading: string): string {
  const text = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = text.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`README.md has no section "## ${heading}"`);
  const end = text.indexOf('\n## ', start + 4);
  return text.slice(start, end < 0 ? undefined : end);
}

/** The fenced code blocks of `text`, in order. */
export function codeBlocks(text: string): CodeBlock[] {
  const out: CodeBlock[] = [];
  const re = /^```(\w*)\n([\s\S]*?)^```$/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push({ lang: m[1]!, body: m[2]! });
  return out;
}

export interface ShellCommand {
  /** The command as a shell runs it (continuation lines joined). */
  line: string;
  /** From a trailing `# error: CODE: text`: the command fails with this line's start. */
  expectError?: { code: string; text: string };
}

/** The commands of a ```sh block: one per line (backslash continuations joined), comment lines skipped. */
export function shellCommands(body: string): ShellCommand[] {
  const joined = body.replace(/\\\n\s*/g, ' ');
  return joined
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((line) => {
      const m = /#\s*error:\s*([A-Z_]+):\s*(.*?)\s*…?\s*$/.exec(line);
      return m ? { line, expectError: { code: m[1]!, text: m[2]! } } : { line };
    });
}
