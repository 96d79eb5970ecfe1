// Summarises a V8 .cpuprofile (from `node --cpu-prof`) as the functions with the most self time, the
// view that says where a hot loop spends its cycles. Samples can be limited to a time window (the load
// run, not start-up), and positions in compiled JavaScript are mapped back to the TypeScript source
// through the `.js.map` files tsc writes next to it.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
    readonly lineNumber: number;
    readonly columnNumber: number;
  };
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface ProfileEntry {
  readonly function: string;
  /** `file:line`, relative to the repository where possible. */
  readonly location: string;
  readonly selfMs: number;
  /** Share of the non-idle samples in the window. */
  readonly percent: number;
}

export interface ProfileSummary {
  readonly file: string;
  /** Length of the window summarised, and how much of it the process was idle. */
  readonly totalMs: number;
  readonly idleMs: number;
  readonly top: readonly ProfileEntry[];
}

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** One decoded source map: per generated line, segments [generatedColumn, sourceIndex, sourceLine]. */
interface SourceMap {
  readonly sources: readonly string[];
  readonly lines: readonly (readonly (readonly [number, number, number])[])[];
}

function decodeMappings(mappings: string): SourceMap['lines'] {
  const lines: [number, number, number][][] = [];
  let source = 0;
  let sourceLine = 0;
  for (const lineText of mappings.split(';')) {
    const segments: [number, number, number][] = [];
    let column = 0;
    for (const segment of lineText.split(',')) {
      if (segment === '') continue;
      const fields: number[] = [];
      let value = 0;
      let shift = 0;
      for (const char of segment) {
        const digit = BASE64.indexOf(char);
        value += (digit & 31) << shift;
        if ((digit & 32) !== 0) {
          shift += 5;
        } else {
          fields.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      column += fields[0] ?? 0;
      if (fields.length >= 4) {
        source += fields[1] ?? 0;
        sourceLine += fields[2] ?? 0;
        segments.push([column, source, sourceLine]);
      }
    }
    lines.push(segments);
  }
  return lines;
}

const maps = new Map<string, SourceMap | undefined>();

function sourceMapOf(jsFile: string): SourceMap | undefined {
  if (!maps.has(jsFile)) {
    const mapFile = `${jsFile}.map`;
    let map: SourceMap | undefined;
    if (existsSync(mapFile)) {
      const raw = JSON.parse(readFileSync(mapFile, 'utf8')) as { sources: string[]; mappings: string };
      map = {
        sources: raw.sources.map((source) => resolve(dirname(jsFile), source)),
        lines: decodeMappings(raw.mappings),
      };
    }
    maps.set(jsFile, map);
  }
  return maps.get(jsFile);
}

/** `file:line` (1-based) in the original source where a map says so, else in the file as run. */
function location(url: string, line: number, column: number, repo: string): string {
  if (url === '') return '';
  if (!url.startsWith('file://')) return `${url}:${line + 1}`;
  const file = fileURLToPath(url);
  const map = sourceMapOf(file);
  const segments = map?.lines[line];
  if (map !== undefined && segments !== undefined) {
    let best: readonly [number, number, number] | undefined;
    for (const segment of segments) {
      if (segment[0] <= column) best = segment;
      else break;
    }
    best ??= segments[0];
    const source = best === undefined ? undefined : map.sources[best[1]];
    if (best !== undefined && source !== undefined) return `${relative(repo, source)}:${best[2] + 1}`;
  }
  return `${relative(repo, file)}:${line + 1}`;
}

export interface SummaryOptions {
  /** Only samples taken this many ms after the profile started, or later. */
  readonly fromMs?: number;
  /** Only samples taken before this many ms after the profile started. */
  readonly toMs?: number;
  readonly count?: number;
}

export function summariseProfile(file: string, repo: string, options: SummaryOptions = {}): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const fromUs = (options.fromMs ?? 0) * 1000;
  const toUs = (options.toMs ?? Infinity) * 1000;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map<string, { function: string; location: string; us: number }>();
  let totalUs = 0;
  let idleUs = 0;
  let at = 0;
  profile.samples.forEach((id, i) => {
    const delta = profile.timeDeltas[i] ?? 0;
    at += delta;
    const node = byId.get(id);
    if (node === undefined || at < fromUs || at >= toUs) return;
    totalUs += delta;
    const frame = node.callFrame;
    const name = frame.functionName === '' ? '(anonymous)' : frame.functionName;
    if (name === '(idle)') {
      idleUs += delta;
      return;
    }
    const where = location(frame.url, frame.lineNumber, frame.columnNumber, repo);
    const key = `${name}\u0000${where}`;
    const entry = self.get(key) ?? { function: name, location: where, us: 0 };
    entry.us += delta;
    self.set(key, entry);
  });
  const busyUs = totalUs - idleUs;
  const top = [...self.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, options.count ?? 15)
    .map((entry) => ({
      function: entry.function,
      location: entry.location,
      selfMs: entry.us / 1000,
      percent: busyUs > 0 ? (100 * entry.us) / busyUs : 0,
    }));
  return { file, totalMs: totalUs / 1000, idleMs: idleUs / 1000, top };
}
