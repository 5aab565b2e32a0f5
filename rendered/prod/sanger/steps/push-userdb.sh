/usr/local/sbin/mailinfra-push-userdb
