import type { NbdClient } from '../nbd/index';

/** An area of a disk, in bytes. */
export interface Area {
  offset: number;
  length: number;
}

/**
 * What a source driver gives for one disk — the shape of VMware's CBT API: a point-in-time
 * read of the disk (over NBD, as nbdkit's VDDK plugin gives it), the areas changed since the
 * previous change_id (QueryChangedDiskAreas; `*` means every allocated area), and the change_id
 * that identifies this point.
 */
export interface SourceSnapshot {
  /** Disk size in bytes. */
  readonly size: number;
  /** The change_id of this point in time: the next incremental starts here. */
  readonly changeId: string;
  /** The change_id the changed areas are relative to; null for a full read. */
  readonly baseChangeId: string | null;
  /** Opens a reader on the point-in-time view (with `base:allocation`). */
  openReader(): Promise<NbdClient>;
  /**
   * Changed areas from `offset` on. Like QueryChangedDiskAreas the answer may cover only part of
   * the rest of the disk: `covered` says how far it reaches; call again from there.
   */
  queryChangedDiskAreas(offset: number): Promise<{ areas: Area[]; covered: number }>;
  /**
   * The job's completion is recorded: forget this chain's tracking before this point (its old
   * bitmaps). Called only when every disk of the job succeeded and the ledger accepted the
   * result, so a failed or refused job leaves both change_ids usable.
   */
  commit(): Promise<void>;
  /** Ends the point-in-time view and stops every process it started. Idempotent. */
  close(): Promise<void>;
}

/**
 * A change_id a chain's head (in the ledger; this job's chain among them) recorded for the disk:
 * other chains' tracking of lower sequences, and tracking of before chains that no head names,
 * is no longer needed and is removed with this job's own superseded tracking.
 */
export interface ChainHead {
  chain: string;
  changeId: string;
}

export interface SourceDriver {
  readonly name: string;
  /** True when this driver handles `source` (a path or a driver URI). */
  accepts(source: string): boolean;
  /**
   * Freezes a point in time of the disk and starts tracking changes from it for `chain` (see
   * `chainTag`): only that chain's tracking is read, rotated and, at commit, removed.
   * `previousChangeId` null (or `*`) asks for a full read. Throws `FullBackupRequiredError` when
   * the previous change_id cannot be honoured. `owner` (see `ownerTag`) names what the driver
   * makes outside the client, so that what a killed client left can be found and removed.
   */
  open(
    source: string,
    previousChangeId: string | null,
    workDir: string,
    chain: string,
    chainHeads?: ChainHead[],
    owner?: string,
  ): Promise<SourceSnapshot>;
}
