/**
 * Control frames between a node and a relay (types 0x10..0x1f). Their
 * bodies are small UTF-8 JSON objects; they carry no payload and no secret.
 * Sans-IO.
 *
 * | type       | direction      | body                                          |
 * | ---------- | -------------- | --------------------------------------------- |
 * | REGISTER   | node → relay   | `{"v":1,"i":instance,"tick":ms,"c"?:1}`       |
 * | REGISTERED | relay → node   | `{"maxFrameSize":n,"timeout":ms,"members":[[name,instance],…]}` |
 * | MEMBERS    | relay → node   | `{"join":[[name,instance],…],"leave":[…]}`    |
 * | PING       | either         | empty                                         |
 * | PONG       | either         | empty                                         |
 *
 * REGISTER's header carries the network and, as sender, the node's name.
 * `"c":1` registers a client-only member: the relay forwards frames
 * addressed to it but never lists it in REGISTERED or MEMBERS (older relays
 * ignore the key and list it as any member).
 * Refusals are GOAWAY frames with codes NAME_TAKEN, NETWORK_REFUSED or FULL.
 *
 * @module
 */

import { encodeFrame, encodeName, type Frame, type FrameType } from "./frame.ts";
import { textDecoder, textEncoder } from "./encoding.ts";
import { FrameError } from "./errors.ts";

/** Version of the registration body. */
export const RELAY_PROTOCOL_VERSION = 1;

/** A member as relays list it: `[name, instance]`. */
export type Member = [name: string, instance: string];

/** Body of REGISTER. */
export interface RegisterBody {
  /** Registration body version. */
  v: number;
  /** The node's instance id. */
  i: string;
  /** The node's keepalive tick, ms. */
  tick: number;
  /**
   * 1 for a client-only member: frames addressed to it are forwarded, but
   * the relay never lists it to others. Absent or 0: a full member.
   */
  c?: 0 | 1;
}

/** Body of REGISTERED. */
export interface RegisteredBody {
  /** Largest frame the relay forwards, bytes. */
  maxFrameSize: number;
  /** The relay's silence timeout, ms. */
  timeout: number;
  /** Members of the network present now, the new node excluded. */
  members: Member[];
}

/** Body of MEMBERS. */
export interface MembersBody {
  /** Members that joined. */
  join: Member[];
  /** Members that left. */
  leave: Member[];
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

function isMemberList(value: unknown): value is Member[] {
  return Array.isArray(value) &&
    value.every((m) =>
      Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string"
    );
}

/** Reads a REGISTER body. Throws {@linkcode FrameError}. */
export function decodeRegister(frame: Frame): RegisterBody {
  const body = parse(frame);
  if (
    body.v !== RELAY_PROTOCOL_VERSION || typeof body.i !== "string" ||
    !/^[0-9a-f]{16}$/.test(body.i) ||
    typeof body.tick !== "number" || !(body.tick >= 10 && body.tick <= 3_600_000) ||
    (body.c !== undefined && body.c !== 0 && body.c !== 1)
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
  if (!isMemberList(body.join) || !isMemberList(body.leave)) {
    throw new FrameError("MEMBERS body is malformed");
  }
  return body as unknown as MembersBody;
}

/** A PING or PONG frame (no names, no body). */
export function encodeBeat(type: typeof FrameType.PING | typeof FrameType.PONG): Uint8Array {
  return encodeFrame(type, 0, { network: EMPTY, target: EMPTY, sender: EMPTY }, EMPTY);
}
