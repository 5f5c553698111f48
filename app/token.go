package app

import (
	"crypto/rand"
	"encoding/base64"
)

// NewToken returns 256 random bits, base64url-encoded without padding (43
// characters). Used for answer links, session cookies, CSRF and API tokens.
func NewToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}
