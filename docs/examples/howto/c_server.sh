cc -o upper upper.c && ./upper /tmp/ws/upper &
ouistiti-gw serve --docroot /tmp/ws --port 8080
