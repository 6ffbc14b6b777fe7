// Starts a test origin's TLS server on a loopback port. Closing it also ends the connections
// still open to it: a browser or a proxy keeps them after its pages are done, and
// `server.close` alone would wait for them.
export async function listenOnLoopback(server) {
  const sockets = new Set();
  server.on('secureConnection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    }),
  };
}
