package consul

// NextIndex exposes nextIndex to the external tests.
var NextIndex = nextIndex
