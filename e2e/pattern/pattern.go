// Package pattern generates the deterministic pseudo-random byte streams that
// the e2e servers send and the e2e clients check, so that a transfer of any
// size can be verified by checksum without storing it.
//
// Usage:
//
//	r := pattern.NewReader(seed, n) // n bytes, the same for every (seed, n)
//	sum := pattern.Sum(seed, n)     // hex sha256 of those n bytes
package pattern

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
)

// NewReader returns a reader of exactly n bytes derived from seed.
// A stream of n bytes is a prefix of every longer stream with the same seed.
func NewReader(seed uint64, n int64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], "vipmux-e2e-pattern-v1---")
	return io.LimitReader(rand.NewChaCha8(key), n)
}

// Sum returns the hex sha256 of the n bytes of NewReader(seed, n).
func Sum(seed uint64, n int64) string {
	h := sha256.New()
	buf := make([]byte, 256<<10)
	if _, err := io.CopyBuffer(h, NewReader(seed, n), buf); err != nil {
		panic(err) // a ChaCha8 reader never fails
	}
	return hex.EncodeToString(h.Sum(nil))
}
