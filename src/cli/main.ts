// The `niche` command line: parses arguments with commander, runs one command, maps errors to exit codes.
// Commands write only to the injected streams and return an exit code; nothing here calls process.exit.
import { Command, CommanderError } from 'commander';
import { describeError, exitCodeOf, EXIT_USAGE } from './exit-codes.js';
import { print, type CliIo } from './io.js';

export const VERSION = '0.1.0';

type Register = (program: Command, io: CliIo, run: (action: () => Promise<number>) => Promise<void>) => void;

// Each command's module, loaded only when it is the command being run (or for help, when all are): the
// server's modules (fastify, ssh2, the S3 client, …) take a third of a second and tens of MiB to load,
// which `niche --version`, or sshd starting `niche ssh-serve` for every session, should not pay. Each
// entry names the top-level commands its module registers, in the order `niche --help` lists them.
interface CommandModule {
  readonly names: readonly string[];
  readonly load: () => Promise<Register>;
}

const COMMANDS: readonly CommandModule[] = [
  { names: ['serve'], load: async () => (await import('./commands/serve.js')).registerServe },
  { names: ['token'], load: async () => (await import('./commands/token.js')).registerToken },
  { names: ['ssh-key'], load: async () => (await import('./commands/ssh-key.js')).registerSshKeyCommand },
  {
    names: ['ssh-serve', 'ssh-authorized-keys'],
    load: async () => (await import('./commands/ssh-serve.js')).registerSshServe,
  },
  { names: ['cache'], load: async () => (await import('./commands/cache.js')).registerCache },
  { names: ['doctor'], load: async () => (await import('./commands/doctor.js')).registerDoctor },
  { names: ['gc'], load: async () => (await import('./commands/gc.js')).registerGc },
  { names: ['fsck'], load: async () => (await import('./commands/fsck.js')).registerFsck },
  { names: ['pin'], load: async () => (await import('./commands/pin.js')).registerPin },
  { names: ['import'], load: async () => (await import('./commands/import.js')).registerImport },
  { names: ['key'], load: async () => (await import('./commands/key.js')).registerKey },
  { names: ['login'], load: async () => (await import('./commands/login.js')).registerLogin },
  { names: ['use'], load: async () => (await import('./commands/use.js')).registerUse },
  { names: ['push'], load: async () => (await import('./commands/push.js')).registerPush },
  {
    names: ['watch-store'],
    load: async () => (await import('./commands/watch-store.js')).registerWatchStore,
  },
];

/** The modules to load for `argv`: the one of the command it names, or all (help, an unknown name). */
function commandsFor(argv: readonly string[]): readonly CommandModule[] {
  const first = argv[0];
  if (first === '--version' || first === '-V') return [];
  const named = COMMANDS.find((command) => first !== undefined && command.names.includes(first));
  return named === undefined ? COMMANDS : [named];
}

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
  const registers = await Promise.all(commandsFor(argv).map((command) => command.load()));
  for (const register of registers) register(program, io, run);

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
