// What `niche push` and `niche watch-store` show while they work: on a terminal, a single progress line on
// stderr, redrawn at most ten times a second, with finished paths printed above it; elsewhere (CI logs,
// pipes) one plain line per event. Also the end-of-push summary.
import type { PushSummary } from './push.js';

export interface PushReporter {
  /** The plan, once the closure and the cache's contents are known. */
  planned(plan: PushPlan): void;
  /** NAR bytes read from the store for `path` (negative to undo a failed attempt's bytes). */
  progress(path: string, bytes: number): void;
  pushed(path: string, narSize: number, compressedBytes: number): void;
  retrying(path: string, attempt: number, error: unknown, delayMs: number): void;
  failed(path: string, error: unknown): void;
  skipped(path: string, dependency: string): void;
  /** A message that is not about one path (warnings, watch-store status). */
  note(text: string): void;
  /** Removes the progress line; called once a push is over. */
  done(): void;
}

export interface PushPlan {
  readonly closure: number;
  /** Paths to upload and their total NAR size. */
  readonly uploads: number;
  readonly narBytes: number;
  readonly alreadyPresent: number;
  readonly skippedUpstream: number;
}

const MIB = 1024 * 1024;

function planText(plan: PushPlan): string | undefined {
  if (plan.uploads === 0) return undefined;
  return (
    `pushing ${plan.uploads} of ${plan.closure} paths (${formatMiB(plan.narBytes)}): ` +
    `${plan.alreadyPresent} already in the cache, ${plan.skippedUpstream} signed upstream`
  );
}

export function formatMiB(bytes: number): string {
  return `${(bytes / MIB).toFixed(1)} MiB`;
}

/** A path's size for humans: `512 B`, `12.0 KiB`, `12.3 MiB`, `1.2 GiB`. */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < MIB) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 * MIB) return formatMiB(bytes);
  return `${(bytes / 1024 / MIB).toFixed(1)} GiB`;
}

export function errorText(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' && /^[A-Z_]+$/.test(code) ? `${error.message} (${code})` : error.message;
  }
  return String(error);
}

export function formatSummary(summary: PushSummary): string {
  const seconds = summary.elapsedMs / 1000;
  const rate = seconds > 0 ? summary.narBytes / MIB / seconds : 0;
  const parts = [
    `pushed ${summary.pushed}`,
    `already present ${summary.alreadyPresent}`,
    `skipped upstream ${summary.skippedUpstream}`,
    `failed ${summary.failed.length}`,
  ];
  if (summary.skippedDependency > 0)
    parts.push(`not attempted (dependency failed) ${summary.skippedDependency}`);
  if (summary.cancelled > 0) parts.push(`cancelled ${summary.cancelled}`);
  return (
    `${parts.join(', ')}; ${formatMiB(summary.narBytes)} NAR, ${formatMiB(summary.compressedBytes)} compressed ` +
    `in ${seconds.toFixed(1)} s (${rate.toFixed(1)} MiB/s)`
  );
}

function write(stream: NodeJS.WritableStream, text: string): void {
  stream.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** One line per event, for logs and pipes. */
export class LineReporter implements PushReporter {
  constructor(private readonly out: NodeJS.WritableStream) {}
  planned(plan: PushPlan): void {
    const text = planText(plan);
    if (text !== undefined) write(this.out, text);
  }
  progress(_path: string, _bytes: number): void {
    // Too frequent for a log.
  }
  pushed(path: string, narSize: number, _compressedBytes: number): void {
    write(this.out, `pushed ${path}  ${formatSize(narSize)}`);
  }
  retrying(path: string, attempt: number, error: unknown, delayMs: number): void {
    write(
      this.out,
      `retrying ${path} in ${(delayMs / 1000).toFixed(1)} s (attempt ${attempt} failed: ${errorText(error)})`,
    );
  }
  failed(path: string, error: unknown): void {
    write(this.out, `failed ${path}: ${errorText(error)}`);
  }
  skipped(path: string, dependency: string): void {
    write(this.out, `not pushing ${path}: its reference ${dependency} was not pushed`);
  }
  note(text: string): void {
    write(this.out, text);
  }
  done(): void {
    // Nothing to clear.
  }
}

/** A progress bar on a terminal, with finished paths printed above it. */
export class TtyReporter implements PushReporter {
  private uploads = 0;
  private totalBytes = 0;
  private finished = 0;
  private bytes = 0;
  private readonly started = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private shown = false;

  constructor(
    private readonly out: NodeJS.WritableStream,
    private readonly columns: () => number = () => 80,
  ) {}

  planned(plan: PushPlan): void {
    const text = planText(plan);
    if (text !== undefined) this.above(text);
    this.uploads += plan.uploads;
    this.totalBytes += plan.narBytes;
    this.timer ??= setInterval(() => {
      this.draw();
    }, 100);
    this.timer.unref();
  }
  progress(_path: string, bytes: number): void {
    this.bytes += bytes;
  }
  pushed(path: string, narSize: number, _compressedBytes: number): void {
    this.finished++;
    this.above(`pushed ${path}  ${formatSize(narSize)}`);
  }
  retrying(path: string, attempt: number, error: unknown, delayMs: number): void {
    this.above(
      `retrying ${path} in ${(delayMs / 1000).toFixed(1)} s (attempt ${attempt} failed: ${errorText(error)})`,
    );
  }
  failed(path: string, error: unknown): void {
    this.finished++;
    this.above(`failed ${path}: ${errorText(error)}`);
  }
  skipped(path: string, dependency: string): void {
    this.finished++;
    this.above(`not pushing ${path}: its reference ${dependency} was not pushed`);
  }
  note(text: string): void {
    this.above(text);
  }
  done(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.clear();
  }

  private clear(): void {
    if (this.shown) this.out.write('\r\x1b[K');
    this.shown = false;
  }

  private above(text: string): void {
    this.clear();
    write(this.out, text);
    this.draw();
  }

  private draw(): void {
    if (this.uploads === 0) return;
    const fraction =
      this.totalBytes > 0 ? Math.min(1, this.bytes / this.totalBytes) : this.finished / this.uploads;
    const seconds = (Date.now() - this.started) / 1000;
    const rate = seconds > 0 ? this.bytes / MIB / seconds : 0;
    const text =
      ` ${Math.floor(fraction * 100)
        .toString()
        .padStart(3)}%  ${this.finished}/${this.uploads} paths  ` +
      `${formatMiB(this.bytes)} / ${formatMiB(this.totalBytes)}  ${rate.toFixed(1)} MiB/s`;
    const width = Math.max(10, Math.min(40, this.columns() - text.length - 3));
    const filled = Math.round(fraction * width);
    this.out.write(`\r\x1b[K[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]${text}`);
    this.shown = true;
  }
}

/** The reporter for `stream`: a progress bar if it is a terminal, plain lines otherwise. */
export function reporterFor(stream: NodeJS.WritableStream): PushReporter {
  const tty = stream as NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  return tty.isTTY === true ? new TtyReporter(stream, () => tty.columns ?? 80) : new LineReporter(stream);
}
