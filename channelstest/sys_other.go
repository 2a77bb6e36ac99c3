//go:build !linux

package channelstest

import (
	"errors"
	"os/exec"
)

func limitMemory() error {
	return errors.New("the hostile-input child needs Linux for its address-space limit")
}

func dieWithParent(*exec.Cmd) {}
