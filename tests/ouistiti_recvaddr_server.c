/* A direct-mode UNIX server built on ouistiti's own ouistiti_recvaddr(): echo one text frame back. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
int ouistiti_recvaddr(int sockfd, struct sockaddr *addr, socklen_t *addrlen);
int main(int argc, char **argv)
{
	int srv = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	strncpy(un.sun_path, argv[1], sizeof(un.sun_path) - 1);
	unlink(argv[1]);
	if (bind(srv, (struct sockaddr *)&un, sizeof(un)) || listen(srv, 5)) return 1;
	for (;;) {
		int conn = accept(srv, NULL, NULL);
		fd_set set; FD_ZERO(&set); FD_SET(conn, &set);
		select(conn + 1, &set, NULL, NULL, NULL);  /* recvaddr uses MSG_DONTWAIT */
		struct sockaddr_in addr = {0};
		socklen_t len = sizeof(addr);
		int client = ouistiti_recvaddr(conn, (struct sockaddr *)&addr, &len);
		if (client < 0) { close(conn); continue; }
		char text[64];
		int n = snprintf(text, sizeof(text), "hello %s", inet_ntoa(addr.sin_addr));
		unsigned char frame[2] = {0x81, (unsigned char)n};
		write(client, frame, 2); write(client, text, n);
		close(client);
	}
}
