// The `niche` command line: parses arguments with commander, runs one command, maps errors to exit codes.
// Commands write only to the injected streams and return an exit code; nothing here calls process.exit.
import { Command, CommanderError } from 'commander';
import { registerCache } from './commands/cache.js';
import { registerDoctor } from './commands/doctor.js';
import { registerFsck } from './commands/fsck.js';
import { registerGc } from './commands/gc.js';
import { registerImport } from './commands/import.js';
import { registerKey } from './commands/key.js';
import { registerLogin } from './commands/login.js';
import { registerPin } from './commands/pin.js';
import { registerPush } from './commands/push.js';
import { registerServe } from './commands/serve.js';
import { registerSshKeyCommand } from './commands/ssh-key.js';
import { registerSshServe } from './commands/ssh-serve.js';
import { registerToken } from './commands/token.js';
import { registerUse } from './commands/use.js';
import { registerWatchStore } from './commands/watch-store.js';
import { describeError, exitCodeOf, EXIT_USAGE } from './exit-codes.js';
import { print, type CliIo } from './io.js';

export const VERSION = '0.1.0';

export async function main(argv: readonly string[], io: CliIo = process): Promise<number> {
  let exitCode = 0;
  const run = async (action: () => Promise<number>): Promise<void> => {
    try {
      exitCode = await action();
    } catch (error) {
      print(io.stderr, describeError(error));
      exitCode = exitCodeOf(error);
    }
  };

  const program = new Command('niche')
    .description('a signed, multi-tenant Nix binary cache')
    .version(VERSION)
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
    });
  registerServe(program, io, run);
  registerToken(program, io, run);
  registerSshKeyCommand(program, io, run);
  registerSshServe(program, io, run);
  registerCache(program, io, run);
  registerDoctor(program, io, run);
  registerGc(program, io, run);
  registerFsck(program, io, run);
  registerPin(program, io, run);
  registerImport(program, io, run);
  registerKey(program, io, run);
  registerLogin(program, io, run);
  registerUse(program, io, run);
  registerPush(program, io, run);
  registerWatchStore(program, io, run);

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    print(io.stderr, describeError(error));
    return exitCodeOf(error);
  }
  return exitCode;
}

// Run directly (`node --import tsx src/cli/main.ts …` in development and tests).
if (import.meta.url === `file://${process.argv[1] ?? ''}`) {
  process.exitCode = await main(process.argv.slice(2));
}
