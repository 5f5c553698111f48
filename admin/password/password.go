// Package password hashes and verifies the superadmin password. Hashes are
// encoded strings kept in configuration: argon2id in the PHC format
// ("$argon2id$v=19$m=65536,t=3,p=2$<salt>$<key>", base64 without padding,
// what Hash produces) or bcrypt ("$2a$", "$2b$", "$2y$").
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Argon2id parameters used by Hash (RFC 9106 second recommendation).
const (
	Memory  = 64 * 1024 // KiB
	Time    = 3
	Threads = 2
	saltLen = 16
	keyLen  = 32
)

// ErrMismatch is returned by Verify for a wrong password.
var ErrMismatch = errors.New("password: mismatch")

// Hash returns an argon2id hash of pw in the PHC string format.
func Hash(pw string) (string, error) {
	if pw == "" {
		return "", errors.New("password: empty password")
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, Time, Memory, Threads, keyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, Memory, Time, Threads, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// Check reports whether encoded is a hash Verify understands.
func Check(encoded string) error {
	if isBcrypt(encoded) {
		_, err := bcrypt.Cost([]byte(encoded))
		if err != nil {
			return fmt.Errorf("password: bcrypt hash: %w", err)
		}
		return nil
	}
	_, err := parseArgon2id(encoded)
	return err
}

// Verify returns nil when pw matches encoded, ErrMismatch when it does not,
// and another error when encoded is malformed. It takes constant time in pw.
func Verify(encoded, pw string) error {
	if isBcrypt(encoded) {
		err := bcrypt.CompareHashAndPassword([]byte(encoded), []byte(pw))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return ErrMismatch
		}
		if err != nil {
			return fmt.Errorf("password: %w", err)
		}
		return nil
	}
	p, err := parseArgon2id(encoded)
	if err != nil {
		return err
	}
	key := argon2.IDKey([]byte(pw), p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
	if subtle.ConstantTimeCompare(key, p.key) != 1 {
		return ErrMismatch
	}
	return nil
}

func isBcrypt(s string) bool {
	return strings.HasPrefix(s, "$2a$") || strings.HasPrefix(s, "$2b$") || strings.HasPrefix(s, "$2y$")
}

type argonParams struct {
	memory, time uint32
	threads      uint8
	salt, key    []byte
}

func parseArgon2id(s string) (*argonParams, error) {
	bad := func(why string) error { return fmt.Errorf("password: not an argon2id or bcrypt hash: %s", why) }
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return nil, bad("want $argon2id$v=19$m=..,t=..,p=..$salt$key")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return nil, bad("unsupported version " + parts[2])
	}
	var p argonParams
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &p.threads); err != nil {
		return nil, bad("parameters " + parts[3])
	}
	if p.memory < 8*uint32(p.threads) || p.time < 1 || p.threads < 1 || p.memory > 4*1024*1024 {
		return nil, bad("parameters out of range")
	}
	enc := base64.RawStdEncoding
	var err error
	if p.salt, err = enc.DecodeString(parts[4]); err != nil || len(p.salt) < 8 {
		return nil, bad("salt")
	}
	if p.key, err = enc.DecodeString(parts[5]); err != nil || len(p.key) < 16 {
		return nil, bad("key")
	}
	return &p, nil
}
