package client_test

import (
	"context"
	"fmt"
	"time"

	"jim/client"
)

// exampleServer starts an in-process jim for the examples.
func exampleServer() (addr string, stop func()) {
	s, err := startServer("", nil, 0)
	if err != nil {
		panic(err)
	}
	return s.Addr, s.Stop
}

func Example() {
	addr, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice, err := client.Dial(ctx, "tcp://"+addr, client.WithUser("alice", "secret", ""))
	if err != nil {
		panic(err)
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, "ws://"+addr+"/", client.WithUser("bob", "secret", ""))
	if err != nil {
		panic(err)
	}
	defer bob.Close()

	ack, err := alice.Send(ctx, "bob", "hello, bob")
	if err != nil {
		panic(err)
	}
	fmt.Println("ack:", ack.Code, "seq", ack.Seq)

	m := <-bob.Messages()
	fmt.Printf("bob got %q from %s (seq %d)\n", m.Chat.Content, m.Chat.From, m.Chat.Seq)
	// Output:
	// ack: 10000 seq 1
	// bob got "hello, bob" from alice (seq 1)
}

func ExampleClient_Join() {
	addr, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	got := make(chan client.Message, 1)
	alice, err := client.Dial(ctx, addr, client.WithUser("alice", "", ""),
		client.WithHandler(func(m client.Message) { got <- m }))
	if err != nil {
		panic(err)
	}
	defer alice.Close()

	if err := alice.Join(ctx, "100"); err != nil {
		panic(err)
	}
	if _, err := alice.SendGroup(ctx, "100", "hi all"); err != nil {
		panic(err)
	}
	// jim echoes group chats to the sender.
	m := <-got
	fmt.Printf("group %s: %s: %s\n", m.Chat.GroupID, m.Chat.From, m.Chat.Content)
	// Output:
	// group 100: alice: hi all
}

func ExampleClient_History() {
	addr, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice, err := client.Dial(ctx, addr, client.WithUser("alice", "", ""))
	if err != nil {
		panic(err)
	}
	defer alice.Close()
	for _, s := range []string{"one", "two", "three"} {
		// bob is offline: the messages are stored and queued for him.
		if ack, err := alice.Send(ctx, "bob", s); err != nil || !ack.Offline {
			panic(fmt.Sprint(ack, err))
		}
	}
	msgs, err := alice.History(ctx, client.HistoryQuery{Peer: "bob", AfterSeq: 1})
	if err != nil {
		panic(err)
	}
	for _, m := range msgs {
		fmt.Println(m.Seq, m.Content)
	}
	// Output:
	// 2 two
	// 3 three
}

func ExampleClient_Offline() {
	addr, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice, err := client.Dial(ctx, addr, client.WithUser("alice", "", ""))
	if err != nil {
		panic(err)
	}
	defer alice.Close()
	if _, err := alice.Send(ctx, "carol", "call me"); err != nil {
		panic(err)
	}

	carol, err := client.Dial(ctx, addr, client.WithUser("carol", "", ""))
	if err != nil {
		panic(err)
	}
	defer carol.Close()
	msgs, err := carol.Offline(ctx, client.OfflineQuery{})
	if err != nil {
		panic(err)
	}
	for _, m := range msgs {
		fmt.Printf("%s: %s\n", m.From, m.Content)
	}
	// Output:
	// alice: call me
}
