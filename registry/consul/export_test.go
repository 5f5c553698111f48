package consul

// NextIndex exposes nextIndex to the external tests.
var NextIndex = nextIndex

// Backoff exposes backoff to the external tests.
var Backoff = backoff
