/**
 * PEM (RFC 7468) in and out. Text between blocks is ignored, as the RFC allows; a block must have matching
 * BEGIN/END labels and a clean base64 body. Output is normalised: 64-character lines and a final newline.
 */
import { CitadelError } from '../errors.js';

/** Largest PEM/DER input we read (64 KiB): far above any real key, CSR or bundle, and a cheap DoS guard. */
export const MAX_INPUT_BYTES = 64 * 1024;

export interface PemBlock {
  readonly label: string;
  readonly der: Buffer;
}

/** Throws INPUT_TOO_LARGE when `input` exceeds MAX_INPUT_BYTES. */
export function checkInputSize(input: string | Uint8Array, what: string): void {
  const size = typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.length;
  if (size > MAX_INPUT_BYTES) {
    throw new CitadelError('INPUT_TOO_LARGE', `${what} is larger than ${MAX_INPUT_BYTES} bytes`, `${size} bytes`);
  }
}

const LABEL = /^[A-Z0-9 ]*$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BEGIN = '-----BEGIN ';
const END = '-----END ';
const DASHES = '-----';

/**
 * Every PEM block in `text`, decoded. Throws INPUT_TOO_LARGE, PEM_INVALID (mismatched labels, bad base64,
 * a BEGIN without an END, or headers such as Proc-Type, i.e. encrypted legacy keys).
 *
 * One forward scan with indexOf (issue 14): a lazy BEGIN...END regular expression rescans the rest of the text
 * from every BEGIN line, which 64 KB of BEGIN lines turn into a quadratic cost.
 */
export function decodePemBlocks(text: string): PemBlock[] {
  checkInputSize(text, 'PEM input');
  const blocks: PemBlock[] = [];
  const noEnd = () => new CitadelError('PEM_INVALID', 'PEM block without an END line');
  for (let at = text.indexOf(BEGIN); at !== -1; at = text.indexOf(BEGIN, at)) {
    const labelEnd = text.indexOf(DASHES, at + BEGIN.length);
    if (labelEnd === -1) throw noEnd();
    const label = text.slice(at + BEGIN.length, labelEnd);
    if (!LABEL.test(label)) throw new CitadelError('PEM_INVALID', 'malformed PEM BEGIN line');
    const end = text.indexOf(END, labelEnd + DASHES.length);
    if (end === -1) throw noEnd();
    const endLabelEnd = text.indexOf(DASHES, end + END.length);
    if (endLabelEnd === -1) throw noEnd();
    const endLabel = text.slice(end + END.length, endLabelEnd);
    if (label !== endLabel) throw new CitadelError('PEM_INVALID', `PEM block "${label}" ends with "${endLabel.slice(0, 64)}"`);
    const body = text.slice(labelEnd + DASHES.length, end);
    if (body.includes(':')) throw new CitadelError('PEM_INVALID', `PEM block "${label}" has headers (encrypted keys are not supported)`);
    const b64 = body.replace(/[ \t\r\n]+/g, '');
    if (!BASE64.test(b64) || b64.length % 4 !== 0 || b64.length === 0) {
      throw new CitadelError('PEM_INVALID', `PEM block "${label}" is not valid base64`);
    }
    blocks.push({ label, der: Buffer.from(b64, 'base64') });
    at = endLabelEnd + DASHES.length;
  }
  return blocks;
}

/**
 * The one block with a label in `labels`. Other blocks with other labels are ignored only when listed in
 * `ignore` (e.g. "EC PARAMETERS" before an SEC1 key). Throws PEM_INVALID (none, or an unexpected block),
 * PEM_MULTIPLE (more than one), INPUT_TOO_LARGE.
 */
export function decodeSinglePem(text: string, labels: readonly string[], what: string, ignore: readonly string[] = []): PemBlock {
  const blocks = decodePemBlocks(text).filter((b) => !ignore.includes(b.label));
  if (blocks.length === 0) throw new CitadelError('PEM_INVALID', `no PEM ${what} found`);
  if (blocks.length > 1) throw new CitadelError('PEM_MULTIPLE', `expected one PEM ${what}, found ${blocks.length} PEM blocks`);
  const block = blocks[0]!;
  if (!labels.includes(block.label)) throw new CitadelError('PEM_INVALID', `expected a PEM ${what}, found "${block.label}"`);
  return block;
}

/** DER -> PEM with 64-character lines and a trailing newline. */
export function encodePem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  let out = `-----BEGIN ${label}-----\n`;
  for (let i = 0; i < b64.length; i += 64) out += b64.slice(i, i + 64) + '\n';
  return out + `-----END ${label}-----\n`;
}

/**
 * The PEM blocks of `text`, each re-encoded in normal form (one string per block, ending in "\n").
 * With `label`, only blocks with that label are returned. Throws PEM_INVALID, INPUT_TOO_LARGE.
 */
export function splitPem(text: string, label?: string): string[] {
  return decodePemBlocks(text)
    .filter((b) => label === undefined || b.label === label)
    .map((b) => encodePem(b.label, b.der));
}
