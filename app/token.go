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

// NewOneTimePassword returns a generated password to hand to a new user
// once: 120 random bits as 20 base64url characters (no padding), so it is
// easy to type and within every password length bound.
func NewOneTimePassword() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
