// A Kinetid plug played by gorilla/websocket (a stack nobody here wrote):
// hello, three reports each waited for its ack, a ping, a Close 1000.
// Usage: gorilla-device URL DEVICE-ID [FIRST-SEQ]
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	url, dev := os.Args[1], os.Args[2]
	first := 1
	if len(os.Args) > 3 {
		first, _ = strconv.Atoi(os.Args[3])
	}
	d := websocket.Dialer{Subprotocols: []string{"kinetid.v1"}, HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gorilla-device:", err)
		os.Exit(1)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	id := 0
	send := func(m map[string]interface{}) {
		id++
		m["id"] = id
		m["dev"] = dev
		b, _ := json.Marshal(m)
		if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
			fmt.Fprintln(os.Stderr, "gorilla-device:", err)
			os.Exit(1)
		}
	}
	expect := func(t string) {
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				fmt.Fprintln(os.Stderr, "gorilla-device:", err)
				os.Exit(1)
			}
			var m map[string]interface{}
			if json.Unmarshal(b, &m) == nil && m["t"] == t {
				return
			}
		}
	}
	send(map[string]interface{}{"t": "hello", "fw": "gorilla", "role": "active", "period_s": 60})
	expect("welcome")
	for seq := first; seq < first+3; seq++ {
		send(map[string]interface{}{"t": "report", "ts": 1767225600 + 60*seq, "seq": seq, "on": true, "power_w": 1.5, "energy_wh": seq})
		expect("ack")
	}
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
	c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	// Wait for the server's Close (ReadMessage returns it as an error).
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			break
		}
	}
	c.Close()
}
