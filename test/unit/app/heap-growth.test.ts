// The serving processes' heap growth bound: V8 must know the flag (an unknown one is only reported on
// stderr, and the heap would grow as before unnoticed), on every Node the server runs on.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';

void describe('boundHeapGrowth', () => {
  void it("is a flag this Node's V8 accepts, at run time", () => {
    const module = new URL('../../../src/app/heap-growth.ts', import.meta.url).href;
    const child = spawnSync(
      process.execPath,
      ['--import', 'tsx', '-e', `import(${JSON.stringify(module)}).then((m) => m.boundHeapGrowth())`],
      { encoding: 'utf8' },
    );
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stderr, '', 'V8 said nothing about the flag');
    const listed = spawnSync(process.execPath, ['--v8-options'], { encoding: 'utf8' });
    assert.match(listed.stdout, /--heap-growing-percent/);
  });
});
