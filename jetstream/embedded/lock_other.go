//go:build !unix

package embedded

// lockFile marks a temporary store; without flock it is not a lock.
const lockFile = "channels-embedded.lock"

// canLock: a lock held by a live process can be told from an abandoned one.
const canLock = false

type dirLock struct{}

// lockDir does not lock where flock is missing: a temporary store left
// by a crash is then kept.
func lockDir(dir string) (*dirLock, error) { return &dirLock{}, nil }

func (l *dirLock) release() {}
