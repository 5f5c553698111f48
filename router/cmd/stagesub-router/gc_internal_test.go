package main

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	gc, lim := debug.SetGCPercent(100), debug.SetMemoryLimit(math.MaxInt64)
	defer func() { debug.SetGCPercent(gc); debug.SetMemoryLimit(lim) }()

	tuneGC(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != defaultGOGC {
		t.Errorf("GOGC got %d want %d", got, defaultGOGC)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != defaultMemLimit {
		t.Errorf("memory limit got %d want %d", got, defaultMemLimit)
	}
	// Set variables win (the runtime already applied them).
	tuneGC(func(k string) string { return map[string]string{"GOGC": "100", "GOMEMLIMIT": "off"}[k] })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC set: got %d want 100", got)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != math.MaxInt64 {
		t.Errorf("GOMEMLIMIT set: got %d", got)
	}
}
