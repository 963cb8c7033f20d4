/* The demo page: the live user count, the transport in use, and a chat. */
const socket = io();

const numUsers = document.getElementById('num-users');
const numPeople = document.getElementById('num-people');
const transport = document.getElementById('transport');
const messages = document.getElementById('messages');
const form = document.getElementById('chat-form');
const input = document.getElementById('m');

// Enough scrollback for a conversation without letting a long-open tab grow forever.
const MAX_MESSAGES = 200;

function showTransport(text, state) {
  transport.textContent = text;
  transport.dataset.state = state;
}

socket.on('connect', () => showTransport(socket.transport === 'sse' ? 'live (SSE)' : 'live (long-polling)', 'up'));
socket.on('disconnect', () => showTransport('reconnecting', 'down'));
socket.on('connect_error', () => showTransport('offline, retrying', 'down'));

// The tabs of one browser are one person. The server says how many
// people there are only while that differs from the user count.
let users = 0;
let people = null;
function showCounts() {
  numUsers.textContent = users + ' users online';
  numPeople.textContent = (people ?? users) + ' people';
}
socket.on('user count', (count) => { users = count; showCounts(); });
socket.on('people count', (count) => { people = count; showCounts(); });

// Messages carry the sender's public tag, the first 8 hex digits of its
// session id; the full id stays a secret between each client and the server.
const tagOf = (id) => String(id).replace(/-/g, '').slice(0, 8);

socket.on('chat message', ({ sid, message }) => {
  const item = document.createElement('li');
  const who = document.createElement('span');
  const text = document.createElement('span');
  const mine = socket.id !== null && sid === tagOf(socket.id);
  item.className = mine ? 'mine' : '';
  who.className = 'who';
  who.textContent = mine ? 'you' : 'user ' + String(sid).slice(0, 4);
  text.className = 'text';
  // Messages are whatever another client sent: text only, never markup.
  text.textContent = typeof message === 'string' ? message : JSON.stringify(message);
  item.append(who, text);
  messages.append(item);
  while (messages.children.length > MAX_MESSAGES) messages.firstElementChild.remove();
  item.scrollIntoView({ block: 'end' });
});

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (text) socket.emit('chat message', text);
  input.value = '';
  input.focus();
});
