package password_test

import (
	"errors"
	"strings"
	"testing"

	"stagesub.dev/app/password"
)

func TestHashVerify(t *testing.T) {
	h, err := password.Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=7168,t=5,p=1$") {
		t.Errorf("hash = %q, want argon2id PHC string", h)
	}
	h2, _ := password.Hash("correct horse")
	if h == h2 {
		t.Error("two hashes of the same password are equal: salt not random")
	}
	tests := []struct {
		name, hash, pw string
		want           error
	}{
		{"OK", h, "correct horse", nil},
		{"ErrMismatch", h, "correct horsE", password.ErrMismatch},
		{"ErrEmpty", h, "", password.ErrMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := password.Verify(tt.hash, tt.pw); !errors.Is(got, tt.want) {
				t.Errorf("Verify = %v, want %v", got, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "plain", "$2a$10$abc", "$argon2id$v=19$m=99999999,t=1,p=1$AAAA$AAAA"} {
		if err := password.Verify(bad, "x"); err == nil || errors.Is(err, password.ErrMismatch) {
			t.Errorf("Verify(%q) = %v, want a malformed-hash error", bad, err)
		}
	}
}
