package ctl_test

import (
	"context"
	"strings"
	"testing"

	"filippo.io/age"

	"stagesub.dev/registry"
)

func TestTenantCreateBackupRecipient(t *testing.T) {
	f := newFixture(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	key := id.Recipient().String()

	t.Run("OK", func(t *testing.T) {
		f.drop(t, "withkey")
		f.mustRun(t, "tenant", "create", "withkey", "--name", "Keyed", "--backup-recipient", key)
		tn, err := f.store.FindTenant(context.Background(), "withkey")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tn.BackupRecipient, key; got != want {
			t.Errorf("record backup_recipient = %q, want %q", got, want)
		}
		if got := f.mustRun(t, "tenant", "backup-key", "withkey"); strings.TrimSpace(got) != key {
			t.Errorf("backup-key prints %q, want %q", got, key)
		}
	})

	t.Run("ErrNotAgeKey", func(t *testing.T) {
		code, _, stderr := f.run(t, "tenant", "create", "badkey", "--name", "Bad", "--backup-recipient", "ssh-ed25519 AAAA")
		if got, want := code, 1; got != want {
			t.Errorf("exit %d, want %d (stderr %s)", got, want, stderr)
		}
		if !strings.Contains(stderr, "age public key") {
			t.Errorf("stderr does not explain the key: %s", stderr)
		}
		if _, err := f.store.FindTenant(context.Background(), "badkey"); registry.ErrorCode(err) != registry.ENOTFOUND {
			t.Errorf("record after a refused create: err = %v, want not found", err)
		}
	})
}
