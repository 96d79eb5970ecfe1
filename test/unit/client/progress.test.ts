// What push shows: plain lines when stderr is not a terminal, a redrawn progress line with finished paths
// printed above it when it is, and the summary's wording and arithmetic.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import {
  formatSize,
  formatSummary,
  LineReporter,
  reporterFor,
  TtyReporter,
} from '../../../src/client/progress.js';

function capture(isTTY: boolean): { stream: PassThrough & { isTTY?: boolean }; text: () => string } {
  const stream: PassThrough & { isTTY?: boolean } = new PassThrough();
  if (isTTY) stream.isTTY = true;
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  return { stream, text: () => text };
}

const plan = { closure: 3, uploads: 2, narBytes: 3 * 1024 * 1024, alreadyPresent: 1, skippedUpstream: 0 };

describe('reporters', () => {
  it('chooses lines for pipes and a bar for terminals', () => {
    assert.ok(reporterFor(capture(false).stream) instanceof LineReporter);
    assert.ok(reporterFor(capture(true).stream) instanceof TtyReporter);
  });

  it('prints one plain line per event without terminal control codes', () => {
    const out = capture(false);
    const reporter = new LineReporter(out.stream);
    reporter.planned(plan);
    reporter.progress('/nix/store/a', 100);
    reporter.pushed('/nix/store/a', 12.3 * 1024 * 1024, 1);
    reporter.retrying('/nix/store/b', 1, new Error('503'), 1500);
    reporter.failed('/nix/store/b', new Error('refused'));
    reporter.skipped('/nix/store/c', '/nix/store/b');
    reporter.done();
    assert.equal(
      out.text(),
      [
        'pushing 2 of 3 paths (3.0 MiB): 1 already in the cache, 0 signed upstream',
        'pushed /nix/store/a  12.3 MiB',
        'retrying /nix/store/b in 1.5 s (attempt 1 failed: 503)',
        'failed /nix/store/b: refused',
        'not pushing /nix/store/c: its reference /nix/store/b was not pushed',
        '',
      ].join('\n'),
    );
  });

  it('draws a bar on a terminal, prints finished paths above it, and clears it at the end', () => {
    const out = capture(true);
    const reporter = new TtyReporter(out.stream, () => 100);
    reporter.planned(plan);
    reporter.progress('/nix/store/a', 1024 * 1024);
    reporter.pushed('/nix/store/a', 1024 * 1024, 1);
    reporter.done();
    const text = out.text();
    const CLEAR = '\r\u001b[K';
    const bar = text.split(CLEAR).find((part) => part.startsWith('['));
    assert.match(bar ?? '', /^\[#+-+\] +33% {2}1\/2 paths {2}1\.0 MiB \/ 3\.0 MiB/);
    assert.match(text, /pushed \/nix\/store\/a {2}1\.0 MiB\n/);
    assert.ok(text.endsWith(CLEAR), 'the bar is cleared');
  });
});

describe('formatting', () => {
  it('sizes', () => {
    assert.equal(formatSize(512), '512 B');
    assert.equal(formatSize(12 * 1024), '12.0 KiB');
    assert.equal(formatSize(12.34 * 1024 * 1024), '12.3 MiB');
    assert.equal(formatSize(3 * 1024 ** 3), '3.0 GiB');
  });

  it('the summary', () => {
    assert.equal(
      formatSummary({
        closure: 10,
        pushed: 4,
        alreadyPresent: 3,
        skippedUpstream: 1,
        failed: [{ path: '/nix/store/x', error: new Error('no') }],
        skippedDependency: 1,
        cancelled: 0,
        narBytes: 20 * 1024 * 1024,
        compressedBytes: 5 * 1024 * 1024,
        elapsedMs: 2000,
      }),
      'pushed 4, already present 3, skipped upstream 1, failed 1, not attempted (dependency failed) 1; ' +
        '20.0 MiB NAR, 5.0 MiB compressed in 2.0 s (10.0 MiB/s)',
    );
  });
});
