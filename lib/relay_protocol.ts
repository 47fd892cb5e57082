/**
 * Control frames between a node and a relay (types 0x10..0x1f). Their
 * bodies are small UTF-8 JSON objects; they carry no payload and no secret.
 * Sans-IO. docs/PROTOCOL.md ("Relays") is the reference.
 *
 * | type       | direction      | body                                                      |
 * | ---------- | -------------- | --------------------------------------------------------- |
 * | CHALLENGE  | relay → node   | `{"v":2,"n":nonce}`                                       |
 * | REGISTER   | node → relay   | `{"v":2,"tick":ms,"c"?:1,"k","a","card","ns","is"}`       |
 * | REGISTERED | relay → node   | `{"maxFrameSize":n,"timeout":ms,"members":[[p,i,card],…]}` |
 * | MEMBERS    | relay → node   | `{"join":[[p,i,card],…],"leave":[[p,i],…]}`               |
 * | DRAIN      | relay → node   | `{"ms":grace}`                                            |
 * | PING/PONG  | either         | empty                                                     |
 *
 * REGISTER's header carries the network id and, as sender, the node's
 * pseudonym; relays never see a name. Refusals are GOAWAY frames.
 *
 * @module
 */

import { encodeFrame, encodeName, type Frame, type FrameType } from "./frame.ts";
import { FrameError, ProtocolVersionError } from "./errors.ts";
import { isBase64UrlOf, textDecoder, textEncoder } from "./encoding.ts";

/** Version of the registration (CHALLENGE and REGISTER bodies). */
export const RELAY_PROTOCOL_VERSION = 2;

/** Bytes of a CHALLENGE nonce. */
export const NONCE_BYTES = 32;
/** Largest member card a relay stores, bytes (decoded). */
export const MAX_CARD_BYTES = 512;
/** Longest relay address in a REGISTER, characters. */
const MAX_ADDRESS_LENGTH = 300;

/** A member as relays list it on joining: `[pseudonym, instance, card]`. */
export type Member = [pseudonym: string, instance: string, card: string];
/** A member leaving: `[pseudonym, instance]`. */
export type Leaving = [pseudonym: string, instance: string];

/** Body of CHALLENGE. */
export interface ChallengeBody {
  /** Highest registration version the relay speaks. */
  v: number;
  /** Fresh nonce, 32 bytes, unpadded base64url. */
  n: string;
}

/** Body of REGISTER (see docs/PROTOCOL.md, "Registration"). */
export interface RegisterBody {
  /** Registration version. */
  v: number;
  /** The node's keepalive tick, ms. */
  tick: number;
  /** 1 for a client-only member: never listed to others. Absent or 0: a full member. */
  c?: 0 | 1;
  /** Instance public key, 32 bytes, unpadded base64url. */
  k: string;
  /** The relay address the node dialled, canonical. */
  a: string;
  /** Member card: a Fernet token sealing `{"n":name,"i":instance}`, base64url. */
  card: string;
  /** Network signature, unpadded base64url. */
  ns: string;
  /** Instance signature, unpadded base64url. */
  is: string;
}

/** Body of REGISTERED. */
export interface RegisteredBody {
  /** Largest frame the relay forwards, bytes. */
  maxFrameSize: number;
  /** The relay's silence timeout, ms. */
  timeout: number;
  /** Members of the network present now, the new node excluded. */
  members: Member[];
  /** 1 when the relay is one of a cluster (docs/PROTOCOL.md, "Relay clusters"). */
  cluster?: 1;
}

/** Body of MEMBERS. */
export interface MembersBody {
  /** Members that joined. */
  join: Member[];
  /** Members that left. */
  leave: Leaving[];
}

/** Body of DRAIN. */
export interface DrainBody {
  /** Time before the relay closes, ms. */
  ms: number;
}

const EMPTY = new Uint8Array(0);

/** Encodes a control frame of `type` with a JSON `body` (or none). */
export function encodeControl(
  type: number,
  network: string,
  sender: string,
  body?: unknown,
): Uint8Array {
  return encodeFrame(
    type,
    0,
    {
      network: encodeName(network, "network"),
      target: EMPTY,
      sender: encodeName(sender, "sender"),
    },
    body === undefined ? EMPTY : textEncoder.encode(JSON.stringify(body)),
    2 ** 31,
  );
}

function parse(frame: Frame): Record<string, unknown> {
  try {
    const value = JSON.parse(textDecoder.decode(frame.body));
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value;
  } catch {
    // Reported below.
  }
  throw new FrameError(`control frame ${frame.type} has a malformed body`);
}

function isStrings(value: unknown, length: number): boolean {
  return Array.isArray(value) && value.length === length &&
    value.every((item) => typeof item === "string");
}

function isMemberList(value: unknown): value is Member[] {
  return Array.isArray(value) && value.every((m) => isStrings(m, 3));
}

function isLeavingList(value: unknown): value is Leaving[] {
  return Array.isArray(value) && value.every((m) => isStrings(m, 2));
}

/** True for base64url text (padding optional) that decodes to at most `max` bytes. */
function isCard(value: unknown): value is string {
  return typeof value === "string" && value.length <= Math.ceil(MAX_CARD_BYTES / 3) * 4 &&
    /^[A-Za-z0-9_-]+=*$/.test(value);
}

/** Reads a CHALLENGE body. Throws {@linkcode FrameError} or {@linkcode ProtocolVersionError}. */
export function decodeChallenge(frame: Frame): ChallengeBody {
  const body = parse(frame);
  if (typeof body.v === "number" && body.v < RELAY_PROTOCOL_VERSION) {
    throw new ProtocolVersionError(body.v, RELAY_PROTOCOL_VERSION);
  }
  if (typeof body.v !== "number" || !isBase64UrlOf(body.n, NONCE_BYTES)) {
    throw new FrameError("CHALLENGE body is malformed");
  }
  return body as unknown as ChallengeBody;
}

/**
 * Reads a REGISTER body. Throws {@linkcode ProtocolVersionError} for
 * another registration version, {@linkcode FrameError} for anything else
 * malformed. Checks shapes only: the proof is checked by `lib/admission.ts`.
 */
export function decodeRegister(frame: Frame): RegisterBody {
  const body = parse(frame);
  if (typeof body.v === "number" && body.v !== RELAY_PROTOCOL_VERSION) {
    throw new ProtocolVersionError(body.v, RELAY_PROTOCOL_VERSION);
  }
  if (
    body.v !== RELAY_PROTOCOL_VERSION ||
    typeof body.tick !== "number" || !(body.tick >= 10 && body.tick <= 3_600_000) ||
    (body.c !== undefined && body.c !== 0 && body.c !== 1) ||
    !isBase64UrlOf(body.k, 32) || !isBase64UrlOf(body.ns, 64) || !isBase64UrlOf(body.is, 64) ||
    typeof body.a !== "string" || body.a.length > MAX_ADDRESS_LENGTH || !isCard(body.card)
  ) {
    throw new FrameError("REGISTER body is malformed");
  }
  return body as unknown as RegisterBody;
}

/** Reads a REGISTERED body. Throws {@linkcode FrameError}. */
export function decodeRegistered(frame: Frame): RegisteredBody {
  const body = parse(frame);
  if (
    typeof body.maxFrameSize !== "number" || typeof body.timeout !== "number" ||
    !isMemberList(body.members)
  ) {
    throw new FrameError("REGISTERED body is malformed");
  }
  return body as unknown as RegisteredBody;
}

/** Reads a MEMBERS body. Throws {@linkcode FrameError}. */
export function decodeMembers(frame: Frame): MembersBody {
  const body = parse(frame);
  if (!isMemberList(body.join) || !isLeavingList(body.leave)) {
    throw new FrameError("MEMBERS body is malformed");
  }
  return body as unknown as MembersBody;
}

/** Reads a DRAIN body. Throws {@linkcode FrameError}. */
export function decodeDrain(frame: Frame): DrainBody {
  const body = parse(frame);
  if (typeof body.ms !== "number" || !(body.ms >= 0 && body.ms <= 600_000)) {
    throw new FrameError("DRAIN body is malformed");
  }
  return body as unknown as DrainBody;
}

/** A PING or PONG frame (no names, no body). */
export function encodeBeat(type: typeof FrameType.PING | typeof FrameType.PONG): Uint8Array {
  return encodeFrame(type, 0, { network: EMPTY, target: EMPTY, sender: EMPTY }, EMPTY);
}
