/* The demo page's script: the live user count. */
const socket = io();
socket.on('user count', function (data) { document.getElementById('num-users').textContent = data + ' users online'; });
