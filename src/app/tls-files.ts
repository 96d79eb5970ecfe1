// The TLS certificate and key of `niche serve --tls-cert/--tls-key`: PEM files, the certificate followed by
// its chain. Read and checked at start (a bad pair stops the start) and again on SIGHUP (a bad pair is
// logged and the one in use stays), and by `niche doctor`. Checked means: both files readable, the key
// parses, the certificate and chain parse, the key is the certificate's, and the certificate is valid now.
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import type { TlsConfig } from '../config.js';
import { ConfigError } from '../errors.js';

export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** The leaf certificate (the first in the file). */
  readonly leaf: X509Certificate;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** What to say about a certificate in logs and in `niche doctor`. */
export function describeCertificate(leaf: X509Certificate): string {
  return (
    `${leaf.subject.replace(/\n/g, ', ')}, serial ${leaf.serialNumber}, valid until ${leaf.validTo}, ` +
    `SHA-256 ${leaf.fingerprint256}`
  );
}

/** Reads and checks the pair; throws ConfigError TLS_INVALID naming the file and the problem. */
export async function loadTlsMaterial(config: TlsConfig, now: Date = new Date()): Promise<TlsMaterial> {
  const read = async (file: string, what: string): Promise<Buffer> => {
    try {
      return await readFile(file);
    } catch (error) {
      throw new ConfigError(
        'TLS_INVALID',
        `cannot read the TLS ${what} ${file}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  };
  const cert = await read(config.certFile, 'certificate');
  const key = await read(config.keyFile, 'key');
  const pems = cert.toString('latin1').match(PEM_CERTIFICATE) ?? [];
  if (pems.length === 0) {
    throw new ConfigError('TLS_INVALID', `${config.certFile} holds no PEM certificate (BEGIN CERTIFICATE)`);
  }
  let leaf: X509Certificate | undefined;
  for (const [index, pem] of pems.entries()) {
    let parsed: X509Certificate;
    try {
      parsed = new X509Certificate(pem);
    } catch (error) {
      throw new ConfigError(
        'TLS_INVALID',
        `certificate ${index + 1} in ${config.certFile} cannot be parsed: ${(error as Error).message}`,
        { cause: error },
      );
    }
    leaf ??= parsed;
  }
  if (leaf === undefined) throw new ConfigError('TLS_INVALID', `${config.certFile} holds no certificate`);
  try {
    // OpenSSL parses the key and checks that it is the certificate's ("key values mismatch").
    createSecureContext({ cert, key });
  } catch (error) {
    const message = (error as Error).message;
    const why = /mismatch/i.test(message)
      ? `the key in ${config.keyFile} is not the key of the certificate in ${config.certFile}`
      : `${config.keyFile} or ${config.certFile} cannot be used: ${message}`;
    throw new ConfigError('TLS_INVALID', why, { cause: error });
  }
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (now < notBefore || now > notAfter) {
    throw new ConfigError(
      'TLS_INVALID',
      `the certificate in ${config.certFile} is not valid now (valid from ${leaf.validFrom} to ${leaf.validTo})`,
    );
  }
  return { cert, key, leaf };
}
