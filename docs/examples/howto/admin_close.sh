# one session, by id (or: curl -X POST .../admin/sessions/4242-1/close)
curl -s -X DELETE 'http://127.0.0.1:8080/admin/sessions/4242-1?code=4001&reason=maintenance'
# every session of a user
curl -s -X DELETE 'http://127.0.0.1:8080/admin/sessions?user=alice'
