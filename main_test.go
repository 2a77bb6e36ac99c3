package channels_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-micro starts config watchers and caches at init.
		goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("go-micro.dev/v4/config.(*config).run"),
		goleak.IgnoreAnyFunction("go-micro.dev/v4/config.(*config).run.func2"),
		goleak.IgnoreAnyFunction("go-micro.dev/v4/config/loader/memory.(*memory).Watch.func1"),
		goleak.IgnoreAnyFunction("github.com/patrickmn/go-cache.(*janitor).Run"),
		// go-micro's memory registry starts a pruning goroutine that never exits.
		goleak.IgnoreAnyFunction("go-micro.dev/v4/registry.(*memRegistry).ttlPrune"),
	)
}
