// Realisations of content-addressed derivations (`ca-derivations`, PROTOCOL.md §7.2 v1): which output
// path a derivation output resolved to. Nix uploads one with `nix copy` after the output path itself; niche
// accepts it only if that path is in the cache, signs it with the cache's keys (as it signs narinfos),
// and never replaces it: the first realisation of an id stays, the same one again merges new client
// signatures, a different one is a conflict. Realisations go with their out path and with their cache.
import type { CacheRecord, MetadataStore } from '../db/metadata-store.js';
import { ConflictError, InvalidInputError } from '../errors.js';
import {
  formatRealisation,
  isRealisationId,
  parseRealisation,
  realisationFingerprint,
  type Realisation,
} from '../nix/realisation.js';
import { parseSignature } from '../nix/signing.js';
import type { Keyring } from './keyring.js';

const SUFFIX = '.doi';

/** The id in `realisations/<id>.doi`, or undefined if the file name is not one. */
function idOf(fileName: string): string | undefined {
  if (!fileName.endsWith(SUFFIX)) return undefined;
  const id = fileName.slice(0, -SUFFIX.length);
  return isRealisationId(id) ? id : undefined;
}

export class Realisations {
  readonly #db: MetadataStore;
  readonly #keyring: Keyring;
  readonly #now: () => Date;

  constructor(options: { db: MetadataStore; keyring: Keyring; now: () => Date }) {
    this.#db = options.db;
    this.#keyring = options.keyring;
    this.#now = options.now;
  }

  /** The realisation `realisations/<fileName>` as Nix reads it, signatures included; undefined if none. */
  async get(cache: CacheRecord, fileName: string): Promise<string | undefined> {
    const id = idOf(fileName);
    if (id === undefined) return undefined;
    const record = await this.#db.getRealisation(cache.id, id);
    if (record === undefined) return undefined;
    return formatRealisation({
      id: record.id,
      outPath: record.outPath,
      dependentRealisations: new Map(Object.entries(record.dependentRealisations)),
      signatures: record.signatures,
    });
  }

  /** Checks, signs and stores an uploaded realisation. */
  async put(cache: CacheRecord, fileName: string, text: string): Promise<{ status: 'added' | 'unchanged' }> {
    const id = idOf(fileName);
    if (id === undefined) {
      throw new InvalidInputError(
        'REALISATION_INVALID',
        `expected realisations/sha256:<hex>!<output>.doi, not ${JSON.stringify(fileName.slice(0, 100))}`,
      );
    }
    const claim = parseRealisation(text);
    if (claim.id !== id) {
      throw new InvalidInputError('REALISATION_INVALID', `realisation ${claim.id} uploaded as ${id}`);
    }
    const present = await this.#db.findPresentBaseNames(cache.id, [claim.outPath]);
    if (!present.has(claim.outPath)) {
      throw new InvalidInputError(
        'REFERENCE_MISSING',
        `realisation ${id} names ${claim.outPath}, which is not in cache ${cache.name}; upload it first`,
      );
    }
    const keys = await this.#keyring.forCache(cache);
    const ours = new Set(keys.signing.map((key) => key.name));
    const clientSignatures = claim.signatures.filter(
      (signature) => !ours.has(parseSignature(signature).keyName),
    );
    const fingerprint = realisationFingerprint(claim);
    const signed: Realisation = {
      ...claim,
      signatures: [...clientSignatures, ...keys.signing.map((key) => key.sign(fingerprint))],
    };
    const outcome = await this.#db.addRealisation(cache.id, {
      id,
      outPath: signed.outPath,
      dependentRealisations: Object.fromEntries(signed.dependentRealisations),
      signatures: signed.signatures,
      createdAt: this.#now(),
    });
    if (outcome.status === 'added') return { status: 'added' };
    const existing = outcome.existing;
    const existingFingerprint = realisationFingerprint({
      id: existing.id,
      outPath: existing.outPath,
      dependentRealisations: new Map(Object.entries(existing.dependentRealisations)),
    });
    if (existingFingerprint !== fingerprint) {
      throw new ConflictError(
        'REALISATION_CONFLICT',
        `realisation ${id} is already in cache ${cache.name} with out path ${existing.outPath}; it is never replaced`,
      );
    }
    const missing = clientSignatures.filter((signature) => !existing.signatures.includes(signature));
    if (missing.length > 0) await this.#db.addRealisationSignatures(cache.id, id, missing);
    return { status: 'unchanged' };
  }

  /** Deletes the realisations that resolve to `baseName` (the path is being deleted). */
  async deleteOf(cache: CacheRecord, baseName: string): Promise<void> {
    await this.#db.deleteRealisationsOf(cache.id, baseName);
  }
}
