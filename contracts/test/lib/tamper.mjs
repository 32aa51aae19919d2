// Edits of signed objects and signatures, for refusal and property tests.
import { getBytes, hexlify, toBeHex, zeroPadValue } from 'ethers';

/// The secp256k1 group order.
export const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

/// The high-S twin of a 65-byte r‖s‖v signature: (r, n − s, v ^ 1), which ecrecover maps to
/// the same address.
export function highS(sig) {
  const b = getBytes(sig);
  const s = BigInt(hexlify(b.slice(32, 64)));
  const out = new Uint8Array(65);
  out.set(b.slice(0, 32), 0);
  out.set(getBytes(zeroPadValue(toBeHex(N - s), 32)), 32);
  out[64] = b[64] === 27 ? 28 : 27;
  return hexlify(out);
}

/// The signature with its last byte (v) replaced.
export function withV(sig, v) {
  const b = getBytes(sig);
  b[64] = v;
  return hexlify(b);
}

/// `hex` (a 0x string of bytes) with bit `bit` of byte `i` flipped.
export function flipBit(hex, i, bit = 0) {
  const b = getBytes(hex);
  b[i] ^= 1 << bit;
  return hexlify(b);
}

/// A deterministic PRNG (xorshift64*), so a failing property run can be replayed by its seed.
export function rng(seed) {
  let x = BigInt.asUintN(64, BigInt(seed) || 0x9e3779b97f4a7c15n);
  const next = () => {
    x ^= x >> 12n; x ^= BigInt.asUintN(64, x << 25n); x ^= x >> 27n;
    return BigInt.asUintN(64, x * 0x2545f4914f6cdd1dn);
  };
  return {
    int: (n) => Number(next() % BigInt(n)),
    big: next,
    pick: (arr) => arr[Number(next() % BigInt(arr.length))],
  };
}
