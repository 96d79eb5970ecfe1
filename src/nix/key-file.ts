// Reading a secret key file (`nix-store --generate-binary-cache-key`, `nix key generate-secret`) given in
// the configuration. A file that cannot be read or parsed stops the start with a message naming it.
import { readFile } from 'node:fs/promises';
import { ConfigError } from '../errors.js';
import { SecretKey } from './signing.js';

export async function readSecretKeyFile(file: string): Promise<SecretKey> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(
      'KEY_FILE_INVALID',
      `cannot read signing key file ${file}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  try {
    return SecretKey.parse(text);
  } catch (error) {
    throw new ConfigError(
      'KEY_FILE_INVALID',
      `signing key file ${file} is not a Nix secret key (name:base64, as made by nix-store --generate-binary-cache-key): ${(error as Error).message}`,
      { cause: error },
    );
  }
}
