// Which commands an SSH session runs: Nix's two remote commands in the forms Nix sends them, nothing else.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SshCommandRefusedError } from '../../../src/errors.js';
import { parseSshCommand } from '../../../src/ssh/command.js';

describe('parseSshCommand', () => {
  it('accepts what Nix 2.8 and 2.26 run, with env, --, paths and --store', () => {
    assert.deepEqual(parseSshCommand('nix-store --serve --write'), { protocol: 'serve', write: true });
    assert.deepEqual(parseSshCommand('nix-store --serve'), { protocol: 'serve', write: false });
    assert.deepEqual(parseSshCommand('-- nix-store --serve --write'), { protocol: 'serve', write: true });
    assert.deepEqual(parseSshCommand('nix-daemon --stdio'), { protocol: 'daemon' });
    assert.deepEqual(parseSshCommand('NIX_X=1 /run/current-system/sw/bin/nix-daemon --stdio'), {
      protocol: 'daemon',
    });
    assert.deepEqual(parseSshCommand("env 'A=b c' nix-store --write --serve --store 'daemon'"), {
      protocol: 'serve',
      write: true,
    });
    assert.deepEqual(parseSshCommand('nix-daemon --stdio --store=auto'), { protocol: 'daemon' });
  });

  it('refuses shells, other programs, other options and shell syntax', () => {
    for (const command of [
      undefined,
      '',
      '   ',
      'bash',
      'sh -c "nix-store --serve"',
      'nix-store --serve; id',
      'nix-store --serve && id',
      'nix-store --serve $(id)',
      'nix-store --serve `id`',
      'nix-store --gc',
      'nix-store --serve --delete',
      'nix-daemon',
      'nix-daemon --stdio --daemon',
      'nix-store --serve --store',
      'nix-store --serve "unterminated',
      'scp -t /tmp',
      `nix-store --serve ${'x'.repeat(5000)}`,
    ]) {
      assert.throws(
        () => parseSshCommand(command),
        (error: unknown) => error instanceof SshCommandRefusedError && error.code === 'SSH_COMMAND_REFUSED',
        String(command),
      );
    }
    assert.throws(() => parseSshCommand(undefined), /interactive shell/);
    assert.throws(() => parseSshCommand('bash -i'), /the program "bash"/);
  });
});
