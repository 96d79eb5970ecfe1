// Makes the AWS SDK's S3 clients (for the S3 blob store and the S3 import source) without the one warning
// niche has decided about: on Node < 22 the SDK warns, once per process, that its releases from January
// 2027 need Node 22. niche still supports Node 20 (README), pins the SDK through package-lock.json, and
// says so in the README, so the seven lines on every S3 command tell an operator nothing. Only that exact
// text is dropped, and only while a client is being constructed (the SDK emits it synchronously from its
// constructor): any other warning, and a future SDK's warning about another Node version, still shows.
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';

/** The SDK's warning, as `@aws-sdk/core` emits it (checked by test/unit/storage/s3-client.test.ts). */
export function isKnownSdkNodeWarning(warning: string | Error): boolean {
  const text = typeof warning === 'string' ? warning : warning.message;
  return (
    text.startsWith('NodeVersionSupportWarning: The AWS SDK for JavaScript (v3)') &&
    text.includes('will require node >=22.')
  );
}

export function createS3Client(config: S3ClientConfig): S3Client {
  // eslint-disable-next-line @typescript-eslint/unbound-method -- put back below, and called with `process` as this
  const emitWarning = process.emitWarning;
  const filtered = (warning: string | Error, ...rest: unknown[]): void => {
    if (isKnownSdkNodeWarning(warning)) return;
    Reflect.apply(emitWarning, process, [warning, ...rest]);
  };
  process.emitWarning = filtered;
  try {
    return new S3Client(config);
  } finally {
    process.emitWarning = emitWarning;
  }
}
