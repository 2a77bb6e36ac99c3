// Command main prints the default store of the embedded server for
// TestDefaultStoreDirPerProgram.
package main

import (
	"fmt"

	"github.com/microchannels/channels/jetstream/embedded"
)

func main() { fmt.Println(embedded.DefaultStoreDir()) }
