package password_test

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"stagesub.dev/admin/password"
)

func TestHashVerify(t *testing.T) {
	h, err := password.Hash("s3cret pass phrase")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Errorf("hash = %q, want argon2id PHC string", h)
	}
	if err := password.Check(h); err != nil {
		t.Errorf("Check: %v", err)
	}
	h2, _ := password.Hash("s3cret pass phrase")
	if h == h2 {
		t.Error("two hashes of one password are equal: no salt")
	}
	bc, _ := bcrypt.GenerateFromPassword([]byte("s3cret pass phrase"), bcrypt.MinCost)
	tests := []struct {
		name, hash, pw string
		want           error
	}{
		{"Argon2idOK", h, "s3cret pass phrase", nil},
		{"ErrArgon2idMismatch", h, "s3cret pass phrasE", password.ErrMismatch},
		{"BcryptOK", string(bc), "s3cret pass phrase", nil},
		{"ErrBcryptMismatch", string(bc), "nope", password.ErrMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := password.Verify(tt.hash, tt.pw); !errors.Is(got, tt.want) && got != tt.want {
				t.Errorf("Verify = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckErrors(t *testing.T) {
	for _, h := range []string{
		"", "plain", "$argon2i$v=19$m=65536,t=3,p=2$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=18$m=65536,t=3,p=2$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=19$m=1,t=3,p=2$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=19$m=65536,t=3,p=2$!!$a2V5a2V5a2V5a2V5a2V5aw",
		"$2a$04$short",
	} {
		if err := password.Check(h); err == nil {
			t.Errorf("Check(%q) = nil, want an error", h)
		}
	}
	if _, err := password.Hash(""); err == nil {
		t.Error("Hash(\"\") succeeded")
	}
}
