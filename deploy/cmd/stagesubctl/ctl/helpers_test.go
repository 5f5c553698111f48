package ctl_test

import (
	"testing"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/internal/pgtest"
)

type apiService = api.AgentServiceRegistration

// pgtestNew starts a private cluster (tests that stop it must not disturb
// the shared one).
func pgtestNew(tb testing.TB) *pgtest.Cluster { return pgtest.New(tb) }
