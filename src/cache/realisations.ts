// Realisations of content-addressed derivations (`ca-derivations`, PROTOCOL.md §7.2): which output path a
// derivation output resolved to, in both forms Nix writes: `realisations/<id>.doi` (Nix 2.8 - 2.34, Lix;
// keyed by the derivation's hash modulo) and `build-trace-v2/<drv>/<output>.doi` (Nix 2.35+, keyed by the
// derivation's path; kept in the same table under the id `<drv>^<output>`, which no older id can be).
// Nix uploads one with `nix copy` after the output path itself; niche
// accepts it only if that path is in the cache, signs it with the cache's keys (as it signs narinfos),
// and never replaces it: the first realisation of an id stays, the same one again merges new client
// signatures, a different one is a conflict. Realisations go with their out path and with their cache.
import type { CacheRecord, MetadataStore, RealisationRecord } from '../db/metadata-store.js';
import { ConflictError, InvalidInputError } from '../errors.js';
import {
  buildTraceFingerprint,
  buildTraceId,
  buildTraceKey,
  formatBuildTrace,
  formatRealisation,
  isRealisationId,
  parseBuildTrace,
  parseRealisation,
  realisationFingerprint,
} from '../nix/realisation.js';
import { parseSignature } from '../nix/signing.js';
import type { Keyring } from './keyring.js';

const SUFFIX = '.doi';

/** An entry to store, in either form, with how to compute its signed fingerprint from a stored one. */
interface Claim {
  readonly id: string;
  readonly outPath: string;
  readonly dependentRealisations: Readonly<Record<string, string>>;
  readonly signatures: readonly string[];
  readonly fingerprint: (
    entry: Pick<RealisationRecord, 'id' | 'outPath' | 'dependentRealisations'>,
  ) => string;
}

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
    return this.#store(cache, {
      id,
      outPath: claim.outPath,
      dependentRealisations: Object.fromEntries(claim.dependentRealisations),
      signatures: claim.signatures,
      fingerprint: (record) =>
        realisationFingerprint({
          ...record,
          dependentRealisations: new Map(Object.entries(record.dependentRealisations)),
        }),
    });
  }

  /** The build trace `build-trace-v2/<drv>/<fileName>` as Nix 2.35+ reads it; undefined if none. */
  async getBuildTrace(cache: CacheRecord, drv: string, fileName: string): Promise<string | undefined> {
    const key = buildTraceKey(drv, fileName);
    if (key === undefined) return undefined;
    const record = await this.#db.getRealisation(cache.id, buildTraceId(key));
    return record === undefined ? undefined : formatBuildTrace(record);
  }

  /** Checks, signs and stores an uploaded build trace (Nix 2.35+'s realisation). */
  async putBuildTrace(
    cache: CacheRecord,
    drv: string,
    fileName: string,
    text: string,
  ): Promise<{ status: 'added' | 'unchanged' }> {
    const key = buildTraceKey(drv, fileName);
    if (key === undefined) {
      throw new InvalidInputError(
        'REALISATION_INVALID',
        `expected build-trace-v2/<hash>-<name>.drv/<output>.doi, not ${JSON.stringify(`${drv}/${fileName}`.slice(0, 200))}`,
      );
    }
    const claim = parseBuildTrace(text);
    return this.#store(cache, {
      id: buildTraceId(key),
      outPath: claim.outPath,
      dependentRealisations: {},
      signatures: claim.signatures,
      fingerprint: (record) => buildTraceFingerprint(key, record.outPath),
    });
  }

  /**
   * The rules both forms share: the out path must be in the cache; the cache signs; the first entry of an
   * id stays, the same entry again merges the client's signatures, a different one is a conflict.
   */
  async #store(cache: CacheRecord, claim: Claim): Promise<{ status: 'added' | 'unchanged' }> {
    const present = await this.#db.findPresentBaseNames(cache.id, [claim.outPath]);
    if (!present.has(claim.outPath)) {
      throw new InvalidInputError(
        'REFERENCE_MISSING',
        `realisation ${claim.id} names ${claim.outPath}, which is not in cache ${cache.name}; upload it first`,
      );
    }
    const keys = await this.#keyring.forCache(cache);
    const ours = new Set(keys.signing.map((key) => key.name));
    const clientSignatures = claim.signatures.filter(
      (signature) => !ours.has(parseSignature(signature).keyName),
    );
    const fingerprint = claim.fingerprint(claim);
    const outcome = await this.#db.addRealisation(cache.id, {
      id: claim.id,
      outPath: claim.outPath,
      dependentRealisations: claim.dependentRealisations,
      signatures: [...clientSignatures, ...keys.signing.map((key) => key.sign(fingerprint))],
      createdAt: this.#now(),
    });
    if (outcome.status === 'added') return { status: 'added' };
    const existing = outcome.existing;
    if (claim.fingerprint(existing) !== fingerprint) {
      throw new ConflictError(
        'REALISATION_CONFLICT',
        `realisation ${claim.id} is already in cache ${cache.name} with out path ${existing.outPath}; it is never replaced`,
      );
    }
    const missing = clientSignatures.filter((signature) => !existing.signatures.includes(signature));
    if (missing.length > 0) await this.#db.addRealisationSignatures(cache.id, claim.id, missing);
    return { status: 'unchanged' };
  }

  /** Deletes the realisations that resolve to one of `baseNames` (the paths are being deleted). */
  async deleteOf(cache: CacheRecord, baseNames: readonly string[]): Promise<void> {
    if (baseNames.length > 0) await this.#db.deleteRealisationsOf(cache.id, baseNames);
  }
}
