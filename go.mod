module github.com/microchannels/channels

go 1.26.0
