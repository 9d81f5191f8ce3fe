# ./gunicorn.conf.py, read by gunicorn from the directory it starts in: no -k needed
worker_class = "ouistiti_gw.worker.GatewayWorker"
