/* A UNIX server in C: each client's bytes come back in capitals, one client at a time.
   cc -o upper upper.c && ./upper /tmp/ws/upper */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (argc != 2 || strlen(argv[1]) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "usage: %s DOCROOT/NAME\n", argv[0]);
        return 1;
    }
    strcpy(addr.sun_path, argv[1]);
    unlink(addr.sun_path);
    int server = socket(AF_UNIX, SOCK_STREAM, 0);
    if (server < 0 || bind(server, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(server, 16) < 0) {
        perror(argv[1]);
        return 1;
    }
    chmod(addr.sun_path, 0777);
    for (;;) {
        int client = accept(server, NULL, NULL);
        char buffer[65536];
        ssize_t length;
        while (client >= 0 && (length = read(client, buffer, sizeof(buffer))) > 0) {
            for (ssize_t i = 0; i < length; i++)
                buffer[i] = toupper((unsigned char)buffer[i]);
            if (write(client, buffer, length) != length)
                break;
        }
        if (client >= 0)
            close(client);
    }
}
