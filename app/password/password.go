// Package password hashes and verifies staff passwords with argon2id,
// encoded in the PHC string format
// "$argon2id$v=19$m=7168,t=5,p=1$<salt>$<hash>" (base64, no padding).
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Parameters of new hashes: one of OWASP's equivalent argon2id minimums
// (7 MiB, 5 passes, 1 lane). The low-memory variant keeps a login from
// growing the resident memory of an app process (thousands share a host).
// Verify reads the parameters from each hash, so they may change later.
const (
	memoryKiB = 7 * 1024
	passes    = 5
	lanes     = 1
	saltLen   = 16
	keyLen    = 32
)

// MinLength and MaxLength bound accepted passwords (in bytes).
const (
	MinLength = 8
	MaxLength = 200
)

// ErrMismatch is returned by Verify when the password does not match.
var ErrMismatch = errors.New("password: mismatch")

// Hash returns the argon2id PHC string of pw with a random salt.
func Hash(pw string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password: salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, passes, memoryKiB, lanes, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, memoryKiB, passes, lanes,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify returns nil when pw matches hash, ErrMismatch when it does not and
// another error when hash is malformed. It compares in constant time.
func Verify(hash, pw string) error {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return errors.New("password: not an argon2id hash")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return fmt.Errorf("password: unsupported argon2 version %q", parts[2])
	}
	var m uint32
	var t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return fmt.Errorf("password: bad parameters %q: %w", parts[3], err)
	}
	if m > 1<<20 || t > 10 || p == 0 || p > 16 {
		return fmt.Errorf("password: parameters out of range %q", parts[3])
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return fmt.Errorf("password: bad salt: %w", err)
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 64 {
		return errors.New("password: bad key")
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrMismatch
	}
	return nil
}
